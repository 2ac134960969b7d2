// Package chsqltest holds test helpers for the SQL surface: expanding the
// Grafana dashboards' macros the way the ClickHouse data source does, so
// tests can run dashboard queries on a real ClickHouse.
package chsqltest

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

var rangeMacro = regexp.MustCompile(`\$__(timeFilter|dateFilter)\(([^)]+)\)`)

// ExpandGrafana expands what grafana-clickhouse-datasource (pkg/macros)
// expands before sending a query — $__fromTime/$__toTime as
// toDateTime(<unix seconds>), $__timeFilter(c) as a DateTime range,
// $__dateFilter(c) as a range of toDate('<UTC day>') — and then the
// dashboard variables (vars maps "${name}" or "${name:singlequote}" to its
// text). It returns an error naming anything still unexpanded.
func ExpandGrafana(sql string, from, to time.Time, vars map[string]string) (string, error) {
	dt := func(x time.Time) string { return fmt.Sprintf("toDateTime(%d)", x.Unix()) }
	day := func(x time.Time) string { return fmt.Sprintf("toDate('%s')", x.UTC().Format(time.DateOnly)) }
	sql = rangeMacro.ReplaceAllStringFunc(sql, func(m string) string {
		g := rangeMacro.FindStringSubmatch(m)
		col := strings.TrimSpace(g[2])
		if g[1] == "dateFilter" {
			return col + " >= " + day(from) + " AND " + col + " <= " + day(to)
		}
		return col + " >= " + dt(from) + " AND " + col + " <= " + dt(to)
	})
	pairs := []string{"$__fromTime", dt(from), "$__toTime", dt(to)}
	for k, v := range vars {
		pairs = append(pairs, k, v)
	}
	sql = strings.NewReplacer(pairs...).Replace(sql)
	if i := strings.Index(sql, "$"); i >= 0 {
		end := min(len(sql), i+24)
		return sql, fmt.Errorf("unexpanded Grafana macro or variable at %q", sql[i:end])
	}
	return sql, nil
}
