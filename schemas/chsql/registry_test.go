package chsql_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// sqlText matches what a SQL statement looks like in a Go string: the
// keywords this code base writes in upper case.
var sqlText = regexp.MustCompile(`(?s)\bSELECT\b.*\bFROM\b|\bINSERT INTO\b|\bCREATE (TABLE|DATABASE|VIEW|MATERIALIZED VIEW)\b|\bALTER TABLE\b|\bDROP (TABLE|DATABASE|VIEW)\b|\bOPTIMIZE TABLE\b|\bTRUNCATE TABLE\b|\bSYSTEM (FLUSH|RELOAD|DROP|STOP|START)\b`)

// TestNoSQLOutsideRegistry fails when SQL text appears in non-test Go code
// outside this package: every statement the code sends must be a registry
// Statement, so the conformance suite runs it.
func TestNoSQLOutsideRegistry(t *testing.T) {
	var found []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".local", "node_modules", "testdata":
				return filepath.SkipDir
			}
			if rel, _ := filepath.Rel(repoRoot, path); rel == filepath.Join("schemas", "chsql") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && sqlText.MatchString(s) {
				found = append(found, fset.Position(lit.Pos()).String()+": "+firstLine(s))
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("SQL outside schemas/chsql (make it a registry Statement): %s", f)
	}
}

func TestRegistryDetectsSQL(t *testing.T) {
	for _, s := range []string{"SELECT a FROM t", "INSERT INTO t (a)", "CREATE TABLE IF NOT EXISTS x", "DROP DATABASE IF EXISTS "} {
		if !sqlText.MatchString(s) {
			t.Errorf("%q not recognised as SQL", s)
		}
	}
	for _, s := range []string{"select a tenant from the list", "partners_webhook_dlq_depth", "created"} {
		if sqlText.MatchString(s) {
			t.Errorf("%q recognised as SQL", s)
		}
	}
	for _, st := range chsql.All() {
		if !sqlText.MatchString(st.SQL) && !strings.HasPrefix(st.SQL, "SELECT") {
			t.Errorf("registry statement %s would not be recognised as SQL elsewhere: %s", st.Name, firstLine(st.SQL))
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
