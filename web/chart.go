package web

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// series is one line of a chart: a value per day, NaN where there is none.
type series struct {
	Name   string
	Values []float64
}

// lineChart renders series over days as an inline SVG (no script, no style
// attribute: colours come from the stylesheet's s0…s5 classes, so the CSP
// holds). It carries a <title> and <desc> for screen readers; the page
// shows the same numbers in a table beside it.
func lineChart(title, yLabel string, days []time.Time, ss []series, format func(float64) string) template.HTML {
	const w, h, left, right, top, bottom = 720.0, 300.0, 64.0, 16.0, 16.0, 40.0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, v := range s.Values {
			if !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-labelledby="chart-%s-t chart-%s-d" xmlns="http://www.w3.org/2000/svg">`,
		w, h, slug(title), slug(title))
	fmt.Fprintf(&b, `<title id="chart-%s-t">%s</title>`, slug(title), esc(title))
	if math.IsInf(lo, 1) || len(days) == 0 {
		fmt.Fprintf(&b, `<desc id="chart-%s-d">No data in this window.</desc>`, slug(title))
		fmt.Fprintf(&b, `<text class="empty" x="%.0f" y="%.0f" text-anchor="middle">No data in this window</text></svg>`, w/2, h/2)
		return template.HTML(b.String())
	}
	if lo > 0 {
		lo = 0
	}
	if hi < 0 {
		hi = 0
	}
	if hi == lo {
		hi = lo + 1
	}
	pad := (hi - lo) * 0.08
	hi += pad
	if lo < 0 {
		lo -= pad
	}
	x := func(i int) float64 {
		if len(days) == 1 {
			return left + (w-left-right)/2
		}
		return left + float64(i)*(w-left-right)/float64(len(days)-1)
	}
	y := func(v float64) float64 { return top + (hi-v)/(hi-lo)*(h-top-bottom) }
	var desc []string
	for _, s := range ss {
		last := math.NaN()
		for i := len(s.Values) - 1; i >= 0; i-- {
			if !math.IsNaN(s.Values[i]) {
				last = s.Values[i]
				break
			}
		}
		if !math.IsNaN(last) {
			desc = append(desc, fmt.Sprintf("%s ends at %s", s.Name, format(last)))
		}
	}
	fmt.Fprintf(&b, `<desc id="chart-%s-d">%s from %s to %s. %s.</desc>`, slug(title), esc(yLabel),
		days[0].Format(time.DateOnly), days[len(days)-1].Format(time.DateOnly), esc(strings.Join(desc, "; ")))
	// grid and y ticks
	for i := 0; i <= 4; i++ {
		v := lo + (hi-lo)*float64(i)/4
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, left, w-right, y(v), y(v))
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-6, y(v)+4, esc(format(v)))
	}
	if lo < 0 {
		fmt.Fprintf(&b, `<line class="zero" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, left, w-right, y(0), y(0))
	}
	// x ticks: about six dates
	step := max(1, len(days)/6)
	for i := 0; i < len(days); i += step {
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x(i), h-bottom+18, days[i].Format("Jan 2"))
	}
	for si, s := range ss {
		var pts []string
		flush := func() {
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline class="line s%d" fill="none" points="%s"/>`, si%6, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		for i, v := range s.Values {
			if math.IsNaN(v) {
				flush()
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			fmt.Fprintf(&b, `<circle class="dot s%d" cx="%.1f" cy="%.1f" r="2.5"><title>%s %s: %s</title></circle>`,
				si%6, x(i), y(v), esc(s.Name), days[i].Format(time.DateOnly), esc(format(v)))
		}
		flush()
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}
