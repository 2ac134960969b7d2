package chsql_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// An engine is one ClickHouse the conformance suite runs the SQL surface on:
// a real server through clickhouse-go (the code's own path), or chDB, a
// current ClickHouse in a Python process, fed the exact text clickhouse-go
// sent to the reference server.
type engine interface {
	Name() string
	// Exec runs a statement that returns no rows (DDL, INSERT … VALUES).
	Exec(ctx context.Context, sql string) error
	// Insert writes rows through a registry INSERT statement.
	Insert(ctx context.Context, st chsql.Statement, rows [][]any) error
	// Query runs a SELECT and returns its rows in canonical form. sql is
	// the bound text (server engines bind args themselves and ignore it).
	Query(ctx context.Context, text string, args ...any) ([][]string, error)
}

// --- a real server (clickhouse-go, native protocol) ---------------------------

type serverEngine struct {
	name string
	cfg  config.ClickHouse
	conn driver.Conn
	tz   *time.Location
}

// openServer connects to a fresh database on the server at addr, dropped at
// cleanup. zone is the server's configured time zone (for the name only).
func openServer(t *testing.T, label, addr string) *serverEngine {
	t.Helper()
	cfg := testenv.Config(t).ClickHouse
	cfg.Addr = []string{addr}
	cfg.Database = "conformance_" + testenv.RandomID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chdb.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("%s at %s: %v", label, addr, err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := chdb.DropDatabase(ctx, cfg); err != nil {
			t.Logf("drop %s: %v", cfg.Database, err)
		}
	})
	v, err := chdb.ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var zone string
	if err := conn.QueryRow(ctx, "SELECT timezone()").Scan(&zone); err != nil {
		t.Fatal(err)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return &serverEngine{name: fmt.Sprintf("ClickHouse %s server (%s, %s)", v, zone, label), cfg: cfg, conn: conn, tz: loc}
}

func (e *serverEngine) Name() string { return e.name }

func (e *serverEngine) Exec(ctx context.Context, sql string) error { return e.conn.Exec(ctx, sql) }

func (e *serverEngine) Insert(ctx context.Context, st chsql.Statement, rows [][]any) error {
	b, err := e.conn.PrepareBatch(ctx, st.SQL)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if err := b.Append(r...); err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

func (e *serverEngine) Query(ctx context.Context, sql string, args ...any) ([][]string, error) {
	sets, args := splitSets(args)
	ctx, err := chsql.WithSets(ctx, sets...)
	if err != nil {
		return nil, err
	}
	rows, err := e.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	var out [][]string
	for rows.Next() {
		dest := make([]any, len(cols))
		for i, c := range cols {
			dest[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = canonGo(reflect.ValueOf(dest[i]).Elem().Interface(), c.DatabaseTypeName())
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// boundText runs sql with args on the server with query logging on and
// returns the text clickhouse-go actually sent (from system.query_log), so
// that the other engines run exactly the same statement.
func (e *serverEngine) boundText(ctx context.Context, sql string, args ...any) (string, error) {
	sets, args := splitSets(args)
	sql = inlineSets(sql, sets)
	if len(args) == 0 {
		return sql, nil
	}
	id := "conformance-" + testenv.RandomID() + testenv.RandomID()
	qctx := clickhouse.Context(ctx, clickhouse.WithQueryID(id), clickhouse.WithSettings(clickhouse.Settings{"log_queries": 1}))
	rows, err := e.conn.Query(qctx, sql, args...)
	if err != nil {
		return "", err
	}
	for rows.Next() {
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := e.conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
			return "", err
		}
		var text string
		err := e.conn.QueryRow(ctx, "SELECT query FROM system.query_log WHERE query_id = ? AND type = 2 LIMIT 1", id).Scan(&text)
		if err == nil {
			return text, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("query %s not in system.query_log: %w", id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- chDB (a current ClickHouse engine in a Python process) ------------------

type chdbEngine struct {
	name string
	tz   *time.Location

	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

type chdbReply struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Result  string `json:"result"`
	Version string `json:"version"`
	CHDB    string `json:"chdb"`
}

// startCHDB runs testdata/chdb_exec.py with python (a virtualenv made by
// deploy/local/chdb.sh) in zone, with its own session directory.
func startCHDB(t *testing.T, python, zone string) *chdbEngine {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/chdb_exec.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, script, t.TempDir())
	cmd.Env = append(os.Environ(), "TZ="+zone)
	cmd.Stderr = testWriter{t}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chDB (%s): %v", python, err)
	}
	e := &chdbEngine{tz: loc, cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	hello, err := e.read()
	if err != nil {
		t.Fatalf("chDB (%s): %v", python, err)
	}
	e.name = fmt.Sprintf("ClickHouse %s in chDB %s (%s)", hello.Version, hello.CHDB, zone)
	return e
}

func (e *chdbEngine) Name() string { return e.name }

func (e *chdbEngine) read() (chdbReply, error) {
	line, err := e.out.ReadBytes('\n')
	if err != nil {
		return chdbReply{}, fmt.Errorf("chDB process: %w", err)
	}
	var r chdbReply
	if err := json.Unmarshal(line, &r); err != nil {
		return chdbReply{}, fmt.Errorf("chDB reply %q: %w", line, err)
	}
	if !r.OK {
		return r, errors.New(strings.TrimSpace(r.Error))
	}
	return r, nil
}

func (e *chdbEngine) run(sql string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	req, _ := json.Marshal(map[string]string{"sql": sql})
	if _, err := e.in.Write(append(req, '\n')); err != nil {
		return "", fmt.Errorf("chDB process: %w", err)
	}
	r, err := e.read()
	return r.Result, err
}

func (e *chdbEngine) Exec(_ context.Context, sql string) error {
	_, err := e.run(sql)
	return err
}

func (e *chdbEngine) Insert(_ context.Context, st chsql.Statement, rows [][]any) error {
	var b strings.Builder
	b.WriteString(st.SQL)
	b.WriteString(" VALUES ")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j, v := range r {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(literal(v))
		}
		b.WriteByte(')')
	}
	_, err := e.run(b.String())
	return err
}

func (e *chdbEngine) Query(_ context.Context, sql string, _ ...any) ([][]string, error) {
	res, err := e.run(sql)
	if err != nil {
		return nil, err
	}
	return canonJSON(res, e.tz)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// splitSets separates the chsql.Sets among a statement's arguments (sent
// beside the query) from the values bound into it.
func splitSets(args []any) (sets []chsql.Set, rest []any) {
	for _, a := range args {
		if s, ok := a.(chsql.Set); ok {
			sets = append(sets, s)
		} else {
			rest = append(rest, a)
		}
	}
	return sets, rest
}

// inlineSets writes each set into sql as a subquery over an array literal
// (`IN name` → `IN (SELECT arrayJoin(['a', 'b']))`): the same rows on an
// engine that is handed text only (chDB).
func inlineSets(sql string, sets []chsql.Set) string {
	for _, s := range sets {
		lits := make([]string, len(s.Values))
		for i, v := range s.Values {
			lits[i] = "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
		}
		re := regexp.MustCompile(`\bIN\s+` + regexp.QuoteMeta(s.Name) + `\b`)
		sql = re.ReplaceAllLiteralString(sql, "IN (SELECT arrayJoin(["+strings.Join(lits, ", ")+"]))")
	}
	return sql
}
