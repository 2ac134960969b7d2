package chsql

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster mode (clickhouse.cluster): the same migrations, rewritten
// statement by statement, so a cluster is a configuration and not a fork of
// the schema. Every table T of the migrations becomes
//
//   - T_local ON CLUSTER, its engine Replicated<engine>('/clickhouse/tables/{shard}/<db>/T_local', '{replica}', <args>):
//     the data, one copy per replica of its shard;
//   - T ON CLUSTER AS T_local ENGINE = Distributed(<cluster>, <db>, T_local, <key>):
//     what every statement of the registry reads and writes, unchanged.
//
// Materialized views are per shard (T_local to T_local: each shard rolls up
// what it holds), plain views read the Distributed tables. ON CLUSTER DDL
// resolves unqualified names in the server's default database, so the
// rewrite qualifies every table of the schema with the database.
//
// Sharding keys keep every copy of one record on one shard (a record's id
// determines its user, partner or tenant), so a read that de-duplicates by
// id is right shard by shard; roi_daily lives on the first shard (key 0):
// a batch's rollup INSERT must stay one block, one part, to be atomic
// (schemas/clickhouse/README.md, "Cluster mode").

// ClusterTarget names the cluster and the database a rewrite is for.
type ClusterTarget struct {
	Cluster  string // a cluster of the servers' <remote_servers>
	Database string // the database every table lives in
}

// LocalSuffix ends the name of a table's replicated per-shard table.
const LocalSuffix = "_local"

// shardKeys are the Distributed sharding keys by table; a table not listed
// is only written by materialized views (per shard), its key unused.
var shardKeys = map[string]string{
	"touchpoints":         "cityHash64(user_id)",
	"touchpoints_by_user": "cityHash64(user_id)",
	"conversions":         "cityHash64(user_id)",
	"attributions":        "cityHash64(user_id)",
	"costs":               "cityHash64(partner_id)",
	"webhook_deliveries":  "cityHash64(tenant_id)",
	// one shard: a batch's corrections and ledger rows are one INSERT that
	// lands whole or not at all only if it is one block on one shard.
	"roi_daily":         "0",
	"schema_migrations": "0",
}

func shardKey(table string) string {
	if k, ok := shardKeys[table]; ok {
		return k
	}
	return "rand()"
}

var (
	reCreateTable = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)\s*\(`)
	reEngine      = regexp.MustCompile(`(?is)^\s*ENGINE\s*=\s*(\w*MergeTree)\b`)
	reCreateMV    = regexp.MustCompile(`(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+TO\s+(\w+)\s+AS\s+(.*)$`)
	reCreateView  = regexp.MustCompile(`(?is)^CREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+AS\s+(.*)$`)
	reAlter       = regexp.MustCompile(`(?is)^ALTER\s+TABLE\s+(\w+)\s+(.*)$`)
	reDrop        = regexp.MustCompile(`(?is)^DROP\s+TABLE\s+IF\s+EXISTS\s+(\w+)\s*$`)
	reTruncate    = regexp.MustCompile(`(?is)^TRUNCATE\s+TABLE\s+(\w+)\s*$`)
	reInsert      = regexp.MustCompile(`(?is)^INSERT\s+INTO\s+(\w+)\s*\(`)
	reCreateDB    = regexp.MustCompile(`(?is)^CREATE\s+DATABASE\s+IF\s+NOT\s+EXISTS\s+(\w+)\s*$`)
	reDropDB      = regexp.MustCompile(`(?is)^DROP\s+DATABASE\s+IF\s+EXISTS\s+(\w+)\s*$`)
	reTableRef    = regexp.MustCompile(`(?i)\b(FROM|JOIN)(\s+)(\w+)\b`)
)

// OnCluster rewrites one statement of the migrations (or of the registry's
// DDL: the database, schema_migrations) for cluster mode. tables are the
// tables and views the schema defines (SchemaTables): references to them
// are qualified with the database. A statement of a kind it does not know is
// an error, never sent as it is.
func OnCluster(st string, c ClusterTarget, tables map[string]bool) ([]string, error) {
	if !ValidIdentifier(c.Cluster) || !ValidIdentifier(c.Database) {
		return nil, fmt.Errorf("cluster %q, database %q: want identifiers", c.Cluster, c.Database)
	}
	st = strings.TrimSpace(st)
	q := func(name string) string { return c.Database + "." + name }
	on := " ON CLUSTER " + c.Cluster
	distributed := func(t string) string {
		return "CREATE TABLE IF NOT EXISTS " + q(t) + on + " AS " + q(t+LocalSuffix) +
			" ENGINE = Distributed(" + c.Cluster + ", " + c.Database + ", " + t + LocalSuffix + ", " + shardKey(t) + ")"
	}
	refs := func(body string, suffix string) string {
		return reTableRef.ReplaceAllStringFunc(body, func(m string) string {
			p := reTableRef.FindStringSubmatch(m)
			if !tables[p[3]] {
				return m
			}
			return p[1] + p[2] + q(p[3]+suffix)
		})
	}
	switch {
	case reCreateDB.MatchString(st):
		return []string{st + on}, nil
	case reDropDB.MatchString(st):
		return []string{st + on}, nil
	case reCreateTable.MatchString(st):
		m := reCreateTable.FindStringSubmatchIndex(st)
		name := st[m[2]:m[3]]
		open := m[1] - 1
		end, err := closing(st, open)
		if err != nil {
			return nil, fmt.Errorf("create table %s: %w", name, err)
		}
		cols, rest := st[open:end+1], st[end+1:]
		e := reEngine.FindStringSubmatchIndex(rest)
		if e == nil {
			return nil, fmt.Errorf("create table %s: want ENGINE = …MergeTree after the columns", name)
		}
		engine := rest[e[2]:e[3]]
		after := rest[e[1]:]
		var args string
		if a := strings.TrimLeft(after, " \t\n"); strings.HasPrefix(a, "(") {
			off := len(after) - len(a)
			ae, err := closing(after, off)
			if err != nil {
				return nil, fmt.Errorf("create table %s: engine arguments: %w", name, err)
			}
			args = strings.TrimSpace(after[off+1 : ae])
			after = after[ae+1:]
		}
		repl := "'/clickhouse/tables/{shard}/" + c.Database + "/" + name + LocalSuffix + "', '{replica}'"
		if args != "" {
			repl += ", " + args
		}
		local := "CREATE TABLE IF NOT EXISTS " + q(name+LocalSuffix) + on + " " + cols +
			" ENGINE = Replicated" + engine + "(" + repl + ")" + after
		return []string{local, distributed(name)}, nil
	case reCreateMV.MatchString(st):
		m := reCreateMV.FindStringSubmatch(st)
		return []string{"CREATE MATERIALIZED VIEW IF NOT EXISTS " + q(m[1]) + on + " TO " + q(m[2]+LocalSuffix) +
			" AS " + refs(m[3], LocalSuffix)}, nil
	case reCreateView.MatchString(st):
		m := reCreateView.FindStringSubmatch(st)
		return []string{"CREATE VIEW IF NOT EXISTS " + q(m[1]) + on + " AS " + refs(m[2], "")}, nil
	case reAlter.MatchString(st):
		// 18.16 refuses ALTER ON CLUSTER of a Distributed table over
		// replicated shards; it holds no data, so it is created again over
		// the altered local table.
		m := reAlter.FindStringSubmatch(st)
		return []string{
			"ALTER TABLE " + q(m[1]+LocalSuffix) + on + " " + m[2],
			"DROP TABLE IF EXISTS " + q(m[1]) + on,
			distributed(m[1]),
		}, nil
	case reDrop.MatchString(st):
		m := reDrop.FindStringSubmatch(st)
		return []string{
			"DROP TABLE IF EXISTS " + q(m[1]) + on,
			"DROP TABLE IF EXISTS " + q(m[1]+LocalSuffix) + on,
		}, nil
	case reTruncate.MatchString(st):
		m := reTruncate.FindStringSubmatch(st)
		return []string{"TRUNCATE TABLE " + q(m[1]+LocalSuffix) + on}, nil
	case reInsert.MatchString(st):
		// through the Distributed tables (the connection inserts
		// synchronously in cluster mode)
		return []string{st}, nil
	}
	head, _, _ := strings.Cut(st, "\n")
	return nil, fmt.Errorf("cluster mode cannot rewrite %q", head)
}

// SchemaTables lists the tables and views the statements create (their
// names, as OnCluster qualifies them).
func SchemaTables(sts []string) map[string]bool {
	out := map[string]bool{}
	for _, st := range sts {
		st = strings.TrimSpace(st)
		for _, re := range []*regexp.Regexp{reCreateTable, reCreateMV, reCreateView} {
			if m := re.FindStringSubmatch(st); m != nil {
				out[m[1]] = true
			}
		}
	}
	return out
}

// closing returns the index of the parenthesis closing the one at open,
// skipping quoted strings.
func closing(s string, open int) (int, error) {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '\'':
			for i++; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced parentheses")
}
