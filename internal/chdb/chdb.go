// Package chdb owns the ClickHouse plumbing: connecting with clickhouse-go v2
// over the native protocol (the only one 18.16 speaks to it) and applying the
// embedded migrations of schemas/clickhouse/migrations, recording each in a
// schema_migrations table so `partners migrate` is idempotent.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// Open connects to the configured database, creating it if needed.
func Open(ctx context.Context, c config.ClickHouse) (driver.Conn, error) {
	if err := createDatabase(ctx, c); err != nil {
		return nil, err
	}
	return dial(ctx, c, c.Database)
}

// ClusterSettings are the settings of every query in cluster mode:
//   - insert_distributed_sync: an INSERT into a Distributed table returns
//     once every shard's replica has the rows (not after queueing them on
//     the server it was sent to), so "inserted" means what it means on one
//     server, and a block sent to one shard stays one block (roi_daily's
//     atomic batch INSERT);
//   - (prefer_localhost_replica, on by default: a shard with a replica on
//     the node the query was sent to is read and written there, so the
//     processor reads what it wrote without waiting for replication. Other
//     shards' replicas are chosen by the servers' load_balancing — set it
//     to in_order in their profile when a shard not local to the node has
//     several replicas; 18.16 takes no string setting from clickhouse-go.)
//   - fallback_to_stale_replicas_for_distributed_queries 0 with
//     max_replica_delay_for_distributed_queries 5: a replica that has not
//     fetched an insert for 5 s (its source replica is down) is not read;
//     when no replica of a shard is fresh the query fails (and is retried)
//     instead of returning numbers that miss committed rows.
var ClusterSettings = clickhouse.Settings{
	"insert_distributed_sync":                            1,
	"fallback_to_stale_replicas_for_distributed_queries": 0,
	"max_replica_delay_for_distributed_queries":          5,
}

func dial(ctx context.Context, c config.ClickHouse, database string) (driver.Conn, error) {
	var settings clickhouse.Settings
	if c.Cluster != "" {
		settings = ClusterSettings
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:         c.Addr,
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: database, Username: c.Username, Password: c.Password},
		DialTimeout:  c.DialTimeout,
		MaxOpenConns: 16,
		MaxIdleConns: 8,
		Compression:  &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		Settings:     settings,
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

func createDatabase(ctx context.Context, c config.ClickHouse) error {
	// An identifier cannot be bound; WithDatabase validates it.
	sql, err := clusterDDL(chsql.CreateDatabase, c)
	if err != nil {
		return err
	}
	conn, err := dial(ctx, c, "default")
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", c.Database, err)
	}
	return nil
}

// DropDatabase removes a database (tests).
func DropDatabase(ctx context.Context, c config.ClickHouse) error {
	sql, err := clusterDDL(chsql.DropDatabase, c)
	if err != nil {
		return err
	}
	conn, err := dial(ctx, c, "default")
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, sql)
}

// clusterDDL is a database statement for c: ON CLUSTER in cluster mode.
func clusterDDL(st chsql.Statement, c config.ClickHouse) (string, error) {
	// An identifier cannot be bound; WithDatabase validates it.
	sql, err := st.WithDatabase(c.Database)
	if err != nil {
		return "", fmt.Errorf("clickhouse.database: %w", err)
	}
	if c.Cluster == "" {
		return sql, nil
	}
	out, err := chsql.OnCluster(sql, chsql.ClusterTarget{Cluster: c.Cluster, Database: c.Database}, nil)
	if err != nil {
		return "", fmt.Errorf("clickhouse.cluster: %w", err)
	}
	return out[0], nil
}

// MigrateOption adjusts Migrate.
type MigrateOption func(*migrateOptions)

type migrateOptions struct {
	cluster *chsql.ClusterTarget
}

// For migrates the database of c: in cluster mode (clickhouse.cluster)
// every statement is rewritten by chsql.OnCluster (ON CLUSTER DDL,
// Replicated*MergeTree local tables, Distributed tables under the names the
// code uses). ON CLUSTER DDL waits for every node (up to the servers'
// distributed_ddl_task_timeout, 180 s by default): migrate with the whole
// cluster up.
func For(c config.ClickHouse) MigrateOption {
	return func(o *migrateOptions) {
		if c.Cluster != "" {
			o.cluster = &chsql.ClusterTarget{Cluster: c.Cluster, Database: c.Database}
		}
	}
}

// Migrations returns the embedded migrations in order.
func Migrations() ([]chsql.Migration, error) { return chsql.Migrations() }

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, in order, and returns the versions it applied. Each
// statement is written to be re-runnable (IF NOT EXISTS), so a migration
// interrupted half-way is completed by the next run.
func Migrate(ctx context.Context, conn driver.Conn, log *slog.Logger, opts ...MigrateOption) ([]uint32, error) {
	var o migrateOptions
	for _, f := range opts {
		f(&o)
	}
	ms, err := chsql.Migrations()
	if err != nil {
		return nil, err
	}
	rewrite := func(st string) ([]string, error) { return []string{st}, nil }
	if o.cluster != nil {
		all := []string{chsql.CreateMigrationsTable.SQL}
		for _, m := range ms {
			all = append(all, m.Statements...)
		}
		tables := chsql.SchemaTables(all)
		rewrite = func(st string) ([]string, error) { return chsql.OnCluster(st, *o.cluster, tables) }
	}
	create, err := rewrite(chsql.CreateMigrationsTable.SQL)
	if err != nil {
		return nil, err
	}
	for _, st := range create {
		if err := conn.Exec(ctx, st); err != nil {
			return nil, fmt.Errorf("create schema_migrations: %w", err)
		}
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, chsql.AppliedMigrations.SQL)
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
	var done []uint32
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		for i, st := range m.Statements {
			sts, err := rewrite(st)
			if err != nil {
				return done, fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
			for _, st := range sts {
				if err := conn.Exec(ctx, st); err != nil && !columnExists(st, err) {
					return done, fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
				}
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

// addColumn matches an ALTER TABLE statement that only adds columns.
var addColumn = regexp.MustCompile(`(?is)^\s*ALTER\s+TABLE\s+\S+\s+(ON\s+CLUSTER\s+\S+\s+)?ADD\s+COLUMN\s`)

// columnExists reports whether err says an ALTER TABLE … ADD COLUMN found
// its column already there: 18.16 has no ADD COLUMN IF NOT EXISTS, so a
// migration interrupted after such an ALTER re-runs it and meets this error
// (code 44 on 18.16, 15 DUPLICATE_COLUMN on 20+). One ALTER adds all of its
// columns or none, so "already exists" means the statement did apply.
func columnExists(st string, err error) bool {
	if !addColumn.MatchString(st) {
		return false
	}
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) || (ex.Code != 44 && ex.Code != 15) {
		return false
	}
	return strings.Contains(ex.Message, "already exists")
}

// ServerVersion returns the server's version string.
func ServerVersion(ctx context.Context, conn driver.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, chsql.ServerVersion.SQL).Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

// record inserts the migration into schema_migrations. A one-row batch, not
// Exec with VALUES: clickhouse-go's bound INSERT via Exec stalls on 18.16.
func record(ctx context.Context, conn driver.Conn, m chsql.Migration) error {
	b, err := conn.PrepareBatch(ctx, chsql.RecordMigration.SQL)
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
