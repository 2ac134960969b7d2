package chsql_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Results are compared in a canonical text form that is the same whatever
// the engine's version prints: numbers by value (12.5000 = 12.5; floats to
// 10 significant digits), times as the UTC instant, NULL as NULL.

const dateTimeLayout = "2006-01-02 15:04:05"

func canonNumber(s string, float bool) string {
	if float {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return "number?" + s
		}
		return canonFloat(f)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return "number?" + s
	}
	return d.String()
}

func canonFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case f == 0:
		return "0"
	}
	d, err := decimal.NewFromString(strconv.FormatFloat(f, 'g', 10, 64))
	if err != nil {
		return "float?" + fmt.Sprint(f)
	}
	return d.String()
}

func canonTime(t time.Time, date bool) string {
	if date {
		return t.Format(time.DateOnly)
	}
	return t.UTC().Format(dateTimeLayout) + "Z"
}

// canonGo canonicalises a value scanned by clickhouse-go.
func canonGo(v any, dbType string) string {
	date := strings.HasPrefix(unwrap(dbType), "Date") && !strings.HasPrefix(unwrap(dbType), "DateTime")
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return x
	case decimal.Decimal:
		return x.String()
	case float32:
		return canonFloat(float64(x))
	case float64:
		return canonFloat(x)
	case time.Time:
		return canonTime(x, date)
	case bool:
		if x {
			return "1"
		}
		return "0"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return "NULL"
		}
		return canonGo(rv.Elem().Interface(), unwrap(dbType))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10)
	case reflect.Slice, reflect.Array:
		inner := strings.TrimSuffix(strings.TrimPrefix(unwrap(dbType), "Array("), ")")
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = canonGo(rv.Index(i).Interface(), inner)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	if s, ok := v.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T?%v", v, v)
}

// unwrap strips Nullable(…) and LowCardinality(…).
func unwrap(t string) string {
	for _, w := range []string{"Nullable(", "LowCardinality("} {
		for strings.HasPrefix(t, w) && strings.HasSuffix(t, ")") {
			t = t[len(w) : len(t)-1]
		}
	}
	return t
}

// canonJSON canonicalises a JSONCompact result; tz is the engine's zone (a
// DateTime column without its own zone prints in it).
func canonJSON(res string, tz *time.Location) ([][]string, error) {
	if strings.TrimSpace(res) == "" {
		return nil, nil
	}
	var doc struct {
		Meta []struct{ Name, Type string } `json:"meta"`
		Data [][]json.RawMessage           `json:"data"`
	}
	if err := json.Unmarshal([]byte(res), &doc); err != nil {
		return nil, fmt.Errorf("JSONCompact result: %w", err)
	}
	out := make([][]string, 0, len(doc.Data))
	for _, r := range doc.Data {
		row := make([]string, len(r))
		for i, cell := range r {
			row[i] = canonCell(cell, doc.Meta[i].Type, tz)
		}
		out = append(out, row)
	}
	return out, nil
}

func canonCell(raw json.RawMessage, typ string, tz *time.Location) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "json?" + string(raw)
	}
	return canonValue(v, unwrap(typ), tz)
}

func canonValue(v any, typ string, tz *time.Location) string {
	float := strings.HasPrefix(typ, "Float")
	numeric := float || strings.HasPrefix(typ, "Int") || strings.HasPrefix(typ, "UInt") || strings.HasPrefix(typ, "Decimal")
	switch x := v.(type) {
	case nil:
		return "NULL"
	case json.Number:
		return canonNumber(x.String(), float)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case string:
		switch {
		case numeric: // 64-bit integers and decimals may be quoted
			return canonNumber(x, float)
		case strings.HasPrefix(typ, "DateTime"):
			loc := tz
			if i := strings.Index(typ, "'"); i >= 0 {
				if l, err := time.LoadLocation(strings.Trim(typ[i:], "')")); err == nil {
					loc = l
				}
			}
			t, err := time.ParseInLocation(dateTimeLayout, x, loc)
			if err != nil {
				return "time?" + x
			}
			return canonTime(t, false)
		}
		return x
	case []any:
		inner := unwrap(strings.TrimSuffix(strings.TrimPrefix(typ, "Array("), ")"))
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = canonValue(e, inner, tz)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprintf("%T?%v", v, v)
}

// literal writes a Go value of the dataset as a ClickHouse literal for
// INSERT … VALUES (chDB has no native-protocol batches).
func literal(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(x) + "'"
	case decimal.Decimal:
		return x.String()
	case time.Time:
		// Every dataset time goes into a DateTime('UTC') column, which
		// parses the text in UTC.
		return "'" + x.UTC().Format(dateTimeLayout) + "'"
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case uint8, uint16, uint32, uint64, int, int32, int64:
		return fmt.Sprint(x)
	}
	panic(fmt.Sprintf("literal: unsupported %T", v))
}

// sortRows orders rows so results compare whatever order an engine returns
// rows with equal sort keys in.
func sortRows(rows [][]string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = strings.Join(r, " | ")
	}
	slices.Sort(out)
	return out
}
