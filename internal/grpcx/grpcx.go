// Package grpcx owns what the project's gRPC servers (the xDS control plane
// and the ext_authz plugin) share: transport credentials from a ServerTLS
// section, mutual TLS when it names a client CA, with the certificate, key
// and CA re-read when their files change (a rotated certificate needs no
// restart), and serving until a context ends with a graceful stop bounded in
// time, so a stream that never ends (every xDS stream) cannot hold a
// shutdown.
package grpcx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/partners-engine/partners-engine/internal/config"
)

// reloadCheck is how often the files behind the credentials are checked
// for a change (at most, on a handshake).
var reloadCheck = 10 * time.Second

// ServerCredentials returns the TLS credentials of t, or nil when t enables
// no TLS. It fails at once when a file is missing or unusable.
func ServerCredentials(t config.ServerTLS) (credentials.TransportCredentials, error) {
	if !t.Enabled() {
		return nil, nil
	}
	f := &files{tls: t, now: time.Now}
	if err := f.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.config()
		},
	}
	return credentials.NewTLS(cfg), nil
}

// files holds the loaded certificate and CA and reloads them on change.
type files struct {
	tls config.ServerTLS
	now func() time.Time

	mu      sync.Mutex
	checked time.Time
	stamp   string
	current *tls.Config
}

func (f *files) stampNow() string {
	s := ""
	for _, p := range []string{f.tls.CertFile, f.tls.KeyFile, f.tls.ClientCAFile} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
		}
	}
	return s
}

func (f *files) load() error {
	cert, err := tls.LoadX509KeyPair(f.tls.CertFile, f.tls.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: certificate %s / key %s: %w", f.tls.CertFile, f.tls.KeyFile, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{cert}}
	if f.tls.ClientCAFile != "" {
		pem, err := os.ReadFile(f.tls.ClientCAFile)
		if err != nil {
			return fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: client CA %s holds no PEM certificate", f.tls.ClientCAFile)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	f.current, f.stamp, f.checked = c, f.stampNow(), f.now()
	return nil
}

// config returns the current configuration, reloading the files when they
// changed since the last check. A reload that fails keeps the previous
// configuration (a certificate being rewritten is half there for a moment).
func (f *files) config() (*tls.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.now().Sub(f.checked) >= reloadCheck {
		f.checked = f.now()
		if f.stampNow() != f.stamp {
			prev := f.current
			if err := f.load(); err != nil {
				f.current = prev
			}
		}
	}
	return f.current, nil
}

// Serve serves gs on lis until ctx ends, then stops gracefully: in-flight
// calls finish, for at most grace, after which the remaining streams are cut.
// It returns nil after a stop and gs.Serve's error otherwise.
func Serve(ctx context.Context, gs *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		t := time.NewTimer(grace)
		select {
		case <-stopped:
		case <-t.C:
			gs.Stop()
			<-stopped
		}
		t.Stop()
		err = <-errc
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
