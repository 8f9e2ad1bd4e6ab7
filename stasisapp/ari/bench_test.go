package ari

import (
	"testing"
)

// BenchmarkDecodeEvent measures DecodeEvent over the real recorded websocket frames:
// "all" cycles through every ws event of every recording (the real type mix); the
// per-type sub-benchmarks isolate the frequent types. One op = one event.
func BenchmarkDecodeEvent(b *testing.B) {
	frames := allFrames(b)
	byType := map[string][][]byte{}
	all := make([][]byte, 0, len(frames))
	for _, f := range frames {
		typ, err := peekType(f.data)
		if err != nil {
			b.Fatal(err)
		}
		byType[typ] = append(byType[typ], f.data)
		all = append(all, f.data)
	}
	run := func(name string, msgs [][]byte) {
		b.Run(name, func(b *testing.B) {
			var size int
			for _, m := range msgs {
				size += len(m)
			}
			b.SetBytes(int64(size / len(msgs)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := DecodeEvent(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
		})
	}
	run("all", all)
	for _, typ := range []string{"ChannelVarset", "ChannelDialplan", "Dial", "ChannelHangupRequest", "ChannelDestroyed", "StasisStart", "DeviceStateChanged"} {
		if len(byType[typ]) == 0 {
			b.Fatalf("no recorded %s frames", typ)
		}
		run(typ, byType[typ])
	}
}
