// Package chsql is the SQL surface of partners-engine: the ordered ClickHouse
// migrations (schemas/clickhouse/migrations/*.sql) and every other statement
// the Go code sends, each a named Statement with ? placeholders for bound
// values. Nothing outside this package (and the migration files) holds SQL
// text; a test enforces that, and the conformance suite in this package runs
// every statement on ClickHouse 18.16 and on current engines (chDB) over one
// fixed dataset and checks that both give the same rows.
//
// Every statement must run unchanged on 18.16 and 24.8–26.x:
//   - every joined subquery has an alias (20.3+ requires it);
//   - every INSERT names its columns;
//   - no setting that only one version knows;
//   - times are UTC whatever the server's zone: DateTime columns are
//     DateTime('UTC'), days are toDate(col) of such a column or
//     toDate(x, 'UTC'), never today() or toDate(now()).
package chsql

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Statement is one SQL statement the code sends to ClickHouse.
type Statement struct {
	// Name identifies the statement in the conformance suite and in errors:
	// "<area>.<what>", e.g. "roi.attribution.rollups.partner".
	Name string
	// SQL is the text, with ? for every bound value. Identifiers that
	// cannot be bound (a database name) are {database} placeholders filled
	// by WithDatabase.
	SQL string
}

// String returns the statement's name.
func (s Statement) String() string { return s.Name }

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidIdentifier reports whether name can be written into SQL as an
// unquoted identifier (a database name from config).
func ValidIdentifier(name string) bool { return ident.MatchString(name) }

// WithDatabase returns the text with {database} replaced by db, which must
// be a plain identifier (it cannot be a bound parameter).
func (s Statement) WithDatabase(db string) (string, error) {
	if !ValidIdentifier(db) {
		return "", fmt.Errorf("clickhouse database %q: not an identifier", db)
	}
	return strings.ReplaceAll(s.SQL, "{database}", db), nil
}

var registry = map[string]Statement{}

// register adds a statement to the registry. Names are unique; a duplicate
// is a programming error caught at start-up.
func register(name, sql string) Statement {
	if _, dup := registry[name]; dup {
		panic("chsql: statement " + name + " registered twice")
	}
	s := Statement{Name: name, SQL: strings.TrimSpace(sql)}
	registry[name] = s
	return s
}

// All returns every registered statement, sorted by name.
func All() []Statement {
	out := make([]Statement, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Statement) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the statement with that name.
func Lookup(name string) (Statement, bool) {
	s, ok := registry[name]
	return s, ok
}
