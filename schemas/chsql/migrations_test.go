package chsql

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"empty", "", nil},
		{"only comments", "-- a\n  -- b\n\n", nil},
		{"one", "CREATE TABLE a (x UInt8) ENGINE = Memory;\n", []string{"CREATE TABLE a (x UInt8) ENGINE = Memory"}},
		{"two multi-line with comments",
			"-- header\nCREATE TABLE a (\n    x UInt8 -- trailing\n) ENGINE = Memory;\n\n-- next\nCREATE TABLE b (y String)\nENGINE = Memory;\n",
			[]string{"CREATE TABLE a (\n    x UInt8 -- trailing\n) ENGINE = Memory", "CREATE TABLE b (y String)\nENGINE = Memory"}},
		{"semicolon inside a line does not split", "SELECT ';' AS s,\n 1;\n", []string{"SELECT ';' AS s,\n 1"}},
		{"trailing blanks after ;", "SELECT 1;   \t\nSELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"last statement without ;", "SELECT 1;\nSELECT 2\n", []string{"SELECT 1", "SELECT 2"}},
		{"CRLF", "SELECT 1;\r\nSELECT 2;\r\n", []string{"SELECT 1", "SELECT 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Split(tt.sql); !slices.Equal(got, tt.want) {
				t.Errorf("Split(%q)\n got  %q\n want %q", tt.sql, got, tt.want)
			}
		})
	}
}

func TestEmbeddedMigrationsWellFormed(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Errorf("migration %04d after %04d: not in order", m.Version, ms[i-1].Version)
		}
		if len(m.Statements) == 0 {
			t.Errorf("migration %04d_%s has no statements", m.Version, m.Name)
		}
		for j, st := range m.Statements {
			if strings.Contains(st, ";") && !strings.Contains(st, "';'") {
				t.Errorf("migration %04d_%s statement %d contains ';' mid-statement: end it at a line end", m.Version, m.Name, j+1)
			}
		}
	}
}

func TestLoadRejectsBadNames(t *testing.T) {
	tests := []struct {
		name  string
		files fstest.MapFS
		err   string
	}{
		{"bad name", fstest.MapFS{"m/1_x.sql": {Data: []byte("SELECT 1;")}}, "name must be NNNN_name.sql"},
		{"duplicate version", fstest.MapFS{
			"m/0001_a.sql": {Data: []byte("SELECT 1;")},
			"m/0001_b.sql": {Data: []byte("SELECT 2;")},
		}, "already used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadMigrations(tt.files, "m")
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("got %v, want an error containing %q", err, tt.err)
			}
		})
	}
	ms, err := LoadMigrations(fstest.MapFS{
		"m/0002_b.sql": {Data: []byte("SELECT 2;")},
		"m/0001_a.sql": {Data: []byte("SELECT 1;\nSELECT 11;")},
	}, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 1 || ms[0].Name != "a" || len(ms[0].Statements) != 2 || ms[1].Version != 2 {
		t.Errorf("LoadMigrations: got %+v", ms)
	}
}
