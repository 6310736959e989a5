// Package proc reads a process's CPU time and memory from /proc, for the
// load tool and the tests that measure the daemon from outside.
package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU is the user plus system time the process has used.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // clock ticks of 1/100 s
}

// Memory is the process's resident (RSS) and proportional (PSS) set size
// in bytes.
func Memory(pid int) (rss, pss int64, err error) {
	read := func(file, key string) (int64, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, key) {
				f := strings.Fields(l)
				n, err := strconv.ParseInt(f[1], 10, 64)
				return n * 1024, err
			}
		}
		return 0, fmt.Errorf("/proc/%d/%s: no %s", pid, file, key)
	}
	if rss, err = read("status", "VmRSS:"); err != nil {
		return 0, 0, err
	}
	pss, err = read("smaps_rollup", "Pss:")
	return rss, pss, err
}
