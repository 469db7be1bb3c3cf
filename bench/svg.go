package main

import (
	"bytes"
	"cmp"
	"fmt"
	"html"
	"math"
	"slices"
)

// successSVG plots legitimate success rate (y, 0-100%) against the flood
// rate each step actually reached (x) for every defense, one polyline with
// markers each. The reached rate, not the offered one: the generator shares
// the machine's cores with the defense, and a costly defense slows it.
func successSVG(res *Results) []byte {
	const (
		w, h                     = 760, 440
		left, right, top, bottom = 70, 200, 40, 60
	)
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	maxX := 0.0
	for _, d := range res.Defenses {
		for _, s := range d.Steps {
			maxX = math.Max(maxX, s.FloodPPS)
		}
	}
	maxX = niceCeil(maxX)
	if maxX <= 0 {
		maxX = 1
	}
	x := func(v float64) float64 { return float64(left) + v/maxX*pw }
	y := func(v float64) float64 { return float64(top) + (1-v)*ph }
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f", "#ff7f0e"}

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">Legitimate connections that succeed under a spoofed SYN flood</text>`+"\n", left)
	// Grid and axes.
	for i := 0; i <= 4; i++ {
		v := float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", left-6, y(v)+4, v*100)
		xv := maxX * v
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(xv), top, x(xv), h-bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(xv), h-bottom+18, fmtRate(xv))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">flood rate reached (spoofed SYNs sent per second)</text>`+"\n", float64(left)+pw/2, h-18)
	fmt.Fprintf(&b, `<text x="18" y="%.0f" text-anchor="middle" transform="rotate(-90 18 %.0f)">legitimate success rate</text>`+"\n", float64(top)+ph/2, float64(top)+ph/2)
	// One series per defense; markers differ so overlapping lines stay
	// distinguishable.
	for i, d := range res.Defenses {
		c := colors[i%len(colors)]
		// In order of the rate reached, which is not always the order of
		// the steps: a line going back on itself would read as hysteresis.
		steps := slices.Clone(d.Steps)
		slices.SortStableFunc(steps, func(a, b Step) int { return cmp.Compare(a.FloodPPS, b.FloodPPS) })
		var pts bytes.Buffer
		for _, s := range steps {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(s.FloodPPS), y(s.SuccessRate))
		}
		if len(steps) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", bytes.TrimSpace(pts.Bytes()), c)
		}
		for _, s := range d.Steps {
			cx, cy := x(s.FloodPPS), y(s.SuccessRate)
			switch i % 3 {
			case 0:
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %.1f%% at %s pps</title></circle>`+"\n", cx, cy, c, html.EscapeString(d.Name), 100*s.SuccessRate, fmtRate(s.FloodPPS))
			case 1:
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="8" height="8" fill="%s"><title>%s: %.1f%% at %s pps</title></rect>`+"\n", cx-4, cy-4, c, html.EscapeString(d.Name), 100*s.SuccessRate, fmtRate(s.FloodPPS))
			default:
				fmt.Fprintf(&b, `<path d="M%.1f %.1fl5 8h-10z" fill="%s"><title>%s: %.1f%% at %s pps</title></path>`+"\n", cx, cy-5, c, html.EscapeString(d.Name), 100*s.SuccessRate, fmtRate(s.FloodPPS))
			}
		}
		ly := top + 10 + i*22
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", w-right+15, ly, w-right+40, ly, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", w-right+46, ly+4, html.EscapeString(d.Name))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">%s, %d cores, Linux %s, %s</text>`+"\n", left, h-4, html.EscapeString(res.Machine.CPU), res.Machine.Cores, html.EscapeString(res.Machine.Kernel), res.Date[:10])
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceCeil rounds v up to 1, 2, 4 or 5 times a power of ten, so the axis
// ticks (quarters) are round numbers.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 4, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
