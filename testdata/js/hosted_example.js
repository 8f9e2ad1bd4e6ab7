// The hosted InvokeARI API's JavaScript example (fetch + URLSearchParams), unchanged but
// for the URL, the key and the ari* values, which the test passes in the environment.
// (The documentation's own ARI address is never used: the test points ari at the
// simulator on 127.0.0.1.)
const url = process.env.INVOKEARI_URL;
const apiKey = process.env.INVOKEARI_KEY;

const params = new URLSearchParams();
params.append('d', 'PJSIP/6002');
params.append('c', 'confirmcode');
params.append('e', 's');
params.append('t', '30');
params.append('i', '"InvokeARI" <+15550001111>');
params.append('v', 'CONFCODE=1234');
params.append('ari', process.env.INVOKEARI_ARI);
params.append('ariuser', process.env.INVOKEARI_ARIUSER);
params.append('aripass', process.env.INVOKEARI_ARIPASS);

fetch(url, {
  method: 'POST',
  headers: {
    'X-API-Key': apiKey,
    'Content-Type': 'application/x-www-form-urlencoded'
  },
  body: params
})
  .then(response => response.json())
  .then(data => {
    console.log('Status:', data.status);
    console.log('HTTP code:', data.response.http_code);
    console.log('Channel:', data.response.response && data.response.response.name);
    console.log('Outcome:', data.call && data.call.outcome);
    console.log('Cause:', data.call && data.call.cause);
  })
  .catch(error => {
    console.error('Error:', error);
    process.exitCode = 1;
  });
