package rpc

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseSeconds reads a duration as Go writes it (90s, 2m) or a plain
// number of seconds (90), as Kamailio takes it. Negative is refused.
func ParseSeconds(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > 1e9 {
			return 0, fmt.Errorf("%q: want seconds >= 0", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 120s or 2m, or seconds (0 = none)", s)
	}
	return d, nil
}
