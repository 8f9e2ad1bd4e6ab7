package natsrv

import (
	"fmt"
	"log/slog"
	"sync"
)

// slogLogger adapts nats-server's Logger to slog. Its notices (the ASCII banner, the
// version, the listen addresses, JetStream's settings: some 25 lines per start) go to
// debug level, so the daemon's log shows only nats-server's warnings and errors.
// Fatalf does not exit: it logs at error level and remembers the first message so
// Start can return it as an error.
type slogLogger struct {
	log *slog.Logger

	mu        sync.Mutex
	fatalText string
}

func (l *slogLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *slogLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)
	l.mu.Lock()
	if l.fatalText == "" {
		l.fatalText = msg
	}
	l.mu.Unlock()
}

func (l *slogLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalText
}
