// Package chdb owns the ClickHouse plumbing: connecting with clickhouse-go v2
// over the native protocol (the only one 18.16 speaks to it) and applying the
// embedded migrations of schemas/clickhouse/migrations, recording each in a
// schema_migrations table so `partners migrate` is idempotent.
package chdb

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// Open connects to the configured database, creating it if needed.
func Open(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
	if err := createDatabase(ctx, c); err != nil {
		return nil, err
	}
	return dial(ctx, c, c.Database)
}

func dial(ctx context.Context, c config.ClickHouse, database string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         c.Addr,
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: database, Username: c.Username, Password: c.Password},
		DialTimeout:  c.DialTimeout,
		MaxOpenConns: 16,
		MaxIdleConns: 8,
		Compression:  &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %v: %w", c.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse %v: %w", c.Addr, err)
	}
	return conn, nil
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func createDatabase(ctx context.Context, c config.ClickHouse) error {
	if !ident.MatchString(c.Database) {
		return fmt.Errorf("clickhouse.database %q: not an identifier", c.Database)
	}
	conn, err := dial(ctx, c, "default")
	if err != nil {
		return err
	}
	defer conn.Close()
	// An identifier cannot be bound; it is validated above.
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+c.Database); err != nil {
		return fmt.Errorf("create database %s: %w", c.Database, err)
	}
	return nil
}

// DropDatabase removes a database (tests).
func DropDatabase(ctx context.Context, c config.ClickHouse) error {
	if !ident.MatchString(c.Database) {
		return fmt.Errorf("clickhouse.database %q: not an identifier", c.Database)
	}
	conn, err := dial(ctx, c, "default")
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, "DROP DATABASE IF EXISTS "+c.Database)
}

// Migration is one embedded .sql file.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in order.
func Migrations() ([]Migration, error) {
	return load(schemas.Migrations, "clickhouse/migrations")
}

func load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		if prev, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("migration %s: version %d already used by %s", e.Name(), v, prev)
		}
		seen[uint32(v)] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: uint32(v), Name: m[2], Statements: Split(string(b))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Split cuts a migration into statements: a statement ends with a line whose
// last non-blank character is ';'. Lines starting with "--" are comments.
func Split(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, s)
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, in order, and returns the versions it applied. Each
// statement is written to be re-runnable (IF NOT EXISTS), so a migration
// interrupted half-way is completed by the next run.
func Migrate(ctx context.Context, conn driver.Conn, log *slog.Logger) ([]uint32, error) {
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version UInt32, name String, applied_at DateTime
	) ENGINE = ReplacingMergeTree ORDER BY version`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	var done []uint32
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		for i, st := range m.Statements {
			if err := conn.Exec(ctx, st); err != nil {
				return done, fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := record(ctx, conn, m); err != nil {
			return done, fmt.Errorf("record migration %04d: %w", m.Version, err)
		}
		log.Info("migration applied", "version", m.Version, "name", m.Name)
		done = append(done, m.Version)
	}
	return done, nil
}

// ServerVersion returns the server's version string.
func ServerVersion(ctx context.Context, conn driver.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

// record inserts the migration into schema_migrations. A one-row batch, not
// Exec with VALUES: clickhouse-go's bound INSERT via Exec stalls on 18.16.
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
