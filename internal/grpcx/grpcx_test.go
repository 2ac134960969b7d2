package grpcx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/grpcx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type pki struct {
	t     *testing.T
	dir   string
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	n     int64
}

func newPKI(t *testing.T, name string) *pki {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), ca: ca, caKey: key, n: 1}
	p.write("ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return p
}

func (p *pki) write(name string, b []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue writes a certificate and key signed by the CA, for a server
// (127.0.0.1) or a client.
func (p *pki) issue(name string, server bool) (certFile, keyFile string, cert tls.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if server {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name+".crt", certPEM), p.write(name+".key", keyPEM), c
}

func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

func serveHealth(t *testing.T, creds credentials.TransportCredentials) (addr string, stop func() error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- grpcx.Serve(ctx, gs, lis, 2*time.Second) }()
	return lis.Addr().String(), func() error { cancel(); return <-done }
}

func call(addr string, cfg *tls.Config) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestMutualTLS: with a client CA only clients holding a certificate it
// signed get an answer; a client certificate of another CA is refused.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t, "grpc CA")
	other := newPKI(t, "other CA")
	certFile, keyFile, _ := p.issue("server", true)
	_, _, client := p.issue("envoy", false)
	_, _, stranger := other.issue("envoy", false)
	creds, err := grpcx.ServerCredentials(config.ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: filepath.Join(p.dir, "ca.crt")})
	if err != nil || creds == nil {
		t.Fatalf("credentials: %v", err)
	}
	addr, stop := serveHealth(t, creds)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	if err := call(addr, &tls.Config{RootCAs: p.pool(), Certificates: []tls.Certificate{client}}); err != nil {
		t.Fatalf("client with a certificate of the CA: %v", err)
	}
	if err := call(addr, &tls.Config{RootCAs: p.pool()}); err == nil {
		t.Fatal("a client without a certificate was answered")
	}
	if err := call(addr, &tls.Config{RootCAs: p.pool(), Certificates: []tls.Certificate{stranger}}); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
}

// TestCertificateReloaded: a certificate rewritten on disk is served
// without a restart.
func TestCertificateReloaded(t *testing.T) {
	defer grpcx.SetReloadCheck(10 * time.Millisecond)()
	p := newPKI(t, "grpc CA")
	certFile, keyFile, _ := p.issue("server", true)
	creds, err := grpcx.ServerCredentials(config.ServerTLS{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := serveHealth(t, creds)
	defer func() { _ = stop() }()
	serial := func() *big.Int {
		var got *big.Int
		cfg := &tls.Config{RootCAs: p.pool(), VerifyConnection: func(cs tls.ConnectionState) error {
			got = cs.PeerCertificates[0].SerialNumber
			return nil
		}}
		if err := call(addr, cfg); err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := serial()
	newCert, newKey, _ := p.issue("server-rotated", true)
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, _ := os.ReadFile(f[0])
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for serial().Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was never served")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCredentialsErrors(t *testing.T) {
	if c, err := grpcx.ServerCredentials(config.ServerTLS{}); c != nil || err != nil {
		t.Fatalf("no TLS configured: %v %v", c, err)
	}
	if _, err := grpcx.ServerCredentials(config.ServerTLS{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}); err == nil {
		t.Fatal("missing files accepted")
	}
}

// TestServeBoundedStop: a stream that never ends (a health Watch) cannot
// hold the stop longer than the grace period.
func TestServeBoundedStop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- grpcx.Serve(ctx, gs, lis, 200*time.Millisecond) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return with a stream open")
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
