package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one process of the `partners` binary (a component subcommand),
// started, SIGKILLed and restarted by the suite. Its JSON logs go to
// <dir>/<role>-<slot>.log (appended across incarnations).
type proc struct {
	role  string // control-plane | edge | webhooks | attribution
	slot  int    // instance number within the role
	bin   string
	cfg   string
	env   []string
	admin string // listeners.admin host:port (ops routes, and the role's API)
	grpc  string // listeners.ext_authz (edge) or listeners.xds (control-plane)
	log   string

	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	incarnation int
	stopping    bool     // the suite killed or stopped it: not an exit of its own
	exits       []string // exits of its own (the last line it wrote), restarted as a supervisor would
	exitAt      []time.Time
}

func (p *proc) String() string { return fmt.Sprintf("%s#%d", p.role, p.slot) }

// Start starts a new incarnation (the process must not be running).
func (p *proc) Start(t *testing.T) {
	t.Helper()
	if err := p.start(t); err != nil {
		t.Fatal(err)
	}
}

func (p *proc) start(t *testing.T) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: started while running", p)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.incarnation++
	fmt.Fprintf(f, "{\"chaos\":\"start\",\"incarnation\":%d,\"time\":%q}\n", p.incarnation, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, "--config", p.cfg, p.role)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %v", p, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		own := !p.stopping
		if own {
			p.exits = append(p.exits, fmt.Sprintf("%v: %s", err, lastLine(p.log)))
			p.exitAt = append(p.exitAt, time.Now())
		}
		p.mu.Unlock()
		close(done)
		if own {
			// A process that exits by itself is restarted, as the
			// deployment's supervisor (Kubernetes, systemd) does; the
			// report counts it.
			time.Sleep(time.Second)
			p.mu.Lock()
			again := !p.stopping
			p.mu.Unlock()
			if again {
				if err := p.start(t); err != nil {
					t.Errorf("supervisor: %v", err)
				}
			}
		}
	}()
	p.cmd, p.done, p.stopping = cmd, done, false
	return nil
}

// ownExits returns the exits the process made by itself.
func (p *proc) ownExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exits...)
}

// ownExitTimes returns when the process exited by itself.
func (p *proc) ownExitTimes() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.exitAt...)
}

func lastLine(path string) string {
	lines := strings.Split(strings.TrimSpace(tailFile(path, 2000)), "\n")
	return clip(lines[len(lines)-1], 300)
}

// Running reports whether the current incarnation is alive.
func (p *proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL (no shutdown, no flush, no commit) and waits for the
// process to be gone.
func (p *proc) Kill(t *testing.T) { p.signal(t, syscall.SIGKILL, 0) }

// Dump sends SIGQUIT: the Go runtime writes every goroutine's stack to
// the log and exits (the diagnosis of a stalled process).
func (p *proc) Dump(t *testing.T) { p.signal(t, syscall.SIGQUIT, 10*time.Second) }

// Stop sends SIGTERM (the graceful shutdown) and waits, SIGKILL after 60 s.
func (p *proc) Stop(t *testing.T) { p.signal(t, syscall.SIGTERM, 60*time.Second) }

func (p *proc) signal(t *testing.T, sig syscall.Signal, grace time.Duration) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			t.Logf("%s did not stop within %v of SIGTERM; SIGKILL", p, grace)
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	<-done
}

// WaitReady polls /readyz until it answers 200; it fails the test if the
// process exits first or timeout passes.
func (p *proc) WaitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	for {
		if !p.Running() {
			t.Fatalf("%s exited during start-up; log %s:\n%s", p, p.log, tailFile(p.log, 3000))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
		resp, err := hc.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v (last: %v); log %s:\n%s", p, timeout, err, p.log, tailFile(p.log, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// stackSummary condenses the last goroutine dump in a process log: the
// goroutines that had waited a minute or more, counted by the first
// frame of this module they are in (what the process is stuck on).
func stackSummary(path string) string {
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return err.Error()
	}
	s := string(b)
	if i := strings.LastIndex(s, "SIGQUIT: quit"); i >= 0 {
		s = s[i:]
	}
	counts := map[string]int{}
	for _, g := range strings.Split(s, "\ngoroutine ")[1:] {
		head, body, _ := strings.Cut(g, "\n")
		// "123 [select, 4 minutes]:"
		open, shut := strings.Index(head, "["), strings.LastIndex(head, "]")
		if open < 0 || shut < open || !strings.Contains(head, "minute") {
			continue
		}
		state := head[open+1 : shut]
		frame := "(no frame of this module)"
		for _, line := range strings.Split(body, "\n") {
			if strings.Contains(line, "partners-engine/partners-engine/") && !strings.HasPrefix(line, "\t") {
				frame = line[strings.LastIndex(line, "/")+1:]
				if i := strings.LastIndex(frame, "("); i > 0 {
					frame = frame[:i]
				}
				break
			}
		}
		counts[frame+" ["+state+"]"]++
	}
	if len(counts) == 0 {
		return "no goroutine waited a minute"
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return counts[keys[i]] > counts[keys[j]] || counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j]
	})
	if len(keys) > 12 {
		keys = keys[:12]
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", counts[k], k)
	}
	return strings.Join(parts, "; ")
}
