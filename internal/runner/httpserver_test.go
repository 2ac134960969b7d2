package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestAdminServerTimeouts: the admin listener's server bounds every phase
// of a connection, and a client that never finishes its request headers
// (slowloris) is disconnected by the server instead of holding the
// connection open.
func TestAdminServerTimeouts(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	srv := newHTTPServer(http.NotFoundHandler(), log)
	for name, d := range map[string]time.Duration{"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout} {
		if d <= 0 {
			t.Errorf("admin server %s is %v: unbounded", name, d)
		}
	}
	if srv.ReadHeaderTimeout > srv.ReadTimeout {
		t.Errorf("ReadHeaderTimeout %v over ReadTimeout %v", srv.ReadHeaderTimeout, srv.ReadTimeout)
	}

	if testing.Short() {
		t.Skip("the slow client waits for ReadHeaderTimeout")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHTTP(ctx, lis, http.NotFoundHandler(), log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveHTTP: %v", err)
		}
	}()

	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Our own deadline only keeps a broken server from hanging the test;
	// the server must hang up long before it.
	if err := conn.SetReadDeadline(time.Now().Add(readHeaderTimeout + time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept a connection with unfinished headers open for %v", time.Since(start))
	}
	t.Logf("a client that never finished its headers was disconnected after %v (ReadHeaderTimeout %v)", time.Since(start).Round(time.Millisecond), readHeaderTimeout)
}
