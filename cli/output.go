package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/tcpops/tcpops/rpc"
)

// Every -o json output has one style: each result, event or other object
// is one line of compact JSON (as the daemon sends it), so that scripts can
// read a stream of them line by line; --pretty indents them for people.

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// printJSONLine is printJSON.
func printJSONLine(w io.Writer, v any) error { return printJSON(w, v) }

// printRaw writes a JSON result as it came, on one line like printJSON (as
// it came, when it is one host's of several: merged later).
func printRaw(w io.Writer, raw json.RawMessage) error {
	if h, ok := w.(*hostOutput); ok {
		h.Write(raw)
		h.Write([]byte("\n"))
		return nil
	}
	var b bytes.Buffer
	b.Grow(len(raw) + 1)
	if err := json.Compact(&b, raw); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// prettyWriter indents each line of JSON written through it (--pretty).
type prettyWriter struct {
	w   io.Writer
	buf []byte // a line not yet ended
}

func (p *prettyWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		var out bytes.Buffer
		if err := json.Indent(&out, p.buf[:i], "", "  "); err != nil {
			out.Reset()
			out.Write(p.buf[:i])
		}
		out.WriteByte('\n')
		p.buf = p.buf[i+1:]
		if _, err := p.w.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
}

// table writes rows under a header, plain: no borders, no colour, headers
// as written.
func table(w io.Writer, header []string, rows [][]string) error {
	if h, ok := w.(*hostOutput); ok {
		h.addTable(header, rows) // merged with the other hosts' later
		return nil
	}
	if b, ok := plainTable(header, rows); ok {
		_, err := w.Write(b)
		return err
	}
	return tableWriter(w, header, rows)
}

// plainTable lays out a table of printable ASCII cells as tableWriter
// does, byte for byte (TestPlainTableAsTablewriter), without its cost:
// tablewriter measures every cell's display width through a cache, which
// for a fleet's list of 9,000 connections took 330 ms of the 400. Other
// cells (wide or control characters) go to tableWriter.
func plainTable(header []string, rows [][]string) ([]byte, bool) {
	var widths []int
	size := 0
	measure := func(r []string) bool {
		for i, c := range r {
			for j := 0; j < len(c); j++ {
				if c[j] < ' ' || c[j] > '~' {
					return false
				}
			}
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
			size += len(c) + 2
		}
		return true
	}
	if !measure(header) {
		return nil, false
	}
	for _, r := range rows {
		if !measure(r) {
			return nil, false
		}
	}
	b := make([]byte, 0, size+(len(rows)+1)*(2*len(widths)+1))
	line := func(r []string) {
		start := len(b)
		for i, w := range widths {
			c := ""
			if i < len(r) {
				c = r[i]
			}
			b = append(b, c...)
			for range w - len(c) + 2 {
				b = append(b, ' ')
			}
		}
		for len(b) > start && b[len(b)-1] == ' ' {
			b = b[:len(b)-1]
		}
		b = append(b, '\n')
	}
	if header != nil {
		line(header)
	}
	for _, r := range rows {
		line(r)
	}
	return b, true
}

// tableWriter renders a table with tablewriter.
func tableWriter(w io.Writer, header []string, rows [][]string) error {
	var buf bytes.Buffer
	t := tablewriter.NewTable(&buf,
		tablewriter.WithRendition(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Lines: tw.LinesNone, Separators: tw.SeparatorsNone},
		}),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithPadding(tw.Padding{Left: "", Right: "  ", Overwrite: true}),
		tablewriter.WithTrimSpace(tw.Off),
	)
	if header != nil {
		t.Header(header)
	}
	for _, r := range rows {
		if err := t.Append(r); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	// The renderer pads the last column too; keep lines clean.
	var out bytes.Buffer
	for line := range strings.Lines(buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	_, err := w.Write(out.Bytes())
	return err
}

// keyValues writes two columns, key and value.
func keyValues(w io.Writer, kv [][2]string) error {
	rows := make([][]string, len(kv))
	for i, p := range kv {
		rows[i] = []string{p[0], p[1]}
	}
	return table(w, nil, rows)
}

// secs formats seconds for people: 45s, 12m30s, 3h5m, 2d4h.
func secs(s float64) string {
	if s < 0 {
		return "-"
	}
	if s < 10 {
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", s), "0"), ".") + "s"
	}
	d := time.Duration(s) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// bytesH formats a byte count for people: 800B, 1.2KiB, 3.4MiB.
func bytesH(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// keepaliveH formats keepalive: IDLE/COUNT/INTERVAL for a table column,
// or spelled out.
func keepaliveH(k *rpc.Keepalive, long bool) string {
	switch {
	case k == nil:
		return "-"
	case !k.Enabled:
		return "off"
	case long && k.UserTimeoutMs > 0:
		return fmt.Sprintf("on: idle %ds, %d probes every %ds, user timeout %dms", k.IdleS, k.Count, k.IntervalS, k.UserTimeoutMs)
	case long:
		return fmt.Sprintf("on: idle %ds, %d probes every %ds", k.IdleS, k.Count, k.IntervalS)
	case k.UserTimeoutMs > 0:
		return fmt.Sprintf("%d/%d/%d ut%dms", k.IdleS, k.Count, k.IntervalS, k.UserTimeoutMs)
	}
	return fmt.Sprintf("%d/%d/%d", k.IdleS, k.Count, k.IntervalS)
}
