package metrics

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// The exporter's own process and Go runtime metrics, under the names the
// client library's process and Go collectors use, so that dashboards made
// for other exporters work on `hopcheck serve` too.

// userHZ is the kernel's USER_HZ, the unit of /proc's CPU and start
// times: 100 on every Linux architecture hopcheck builds for.
const userHZ = 100

// procStat holds the fields of /proc/<pid>/stat the exporter reports.
type procStat struct {
	utime, stime uint64 // clock ticks
	startTicks   uint64 // clock ticks after boot
	vsize        uint64 // bytes
	rssPages     int64
}

// parseProcStat decodes /proc/<pid>/stat. The command name (field 2) is
// in parentheses and may hold spaces and parentheses itself, so the
// fields are counted from the last ')'. Pure.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after the command name, want at least 22", len(f))
	}
	var s procStat
	var err error
	for _, x := range []struct {
		dst   *uint64
		field int
	}{{&s.utime, 14}, {&s.stime, 15}, {&s.startTicks, 22}, {&s.vsize, 23}} {
		if *x.dst, err = strconv.ParseUint(f[x.field-3], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("proc stat field %d: %w", x.field, err)
		}
	}
	if s.rssPages, err = strconv.ParseInt(f[24-3], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("proc stat field 24: %w", err)
	}
	return s, nil
}

// parseBootTime reads btime (Unix seconds) from /proc/stat. Pure.
func parseBootTime(b []byte) (uint64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			t, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("proc stat btime: %w", err)
			}
			return t, nil
		}
	}
	return 0, fmt.Errorf("proc stat: no btime line")
}

// RuntimeRegistry returns this process's metrics at the time of the
// call: process_* from /proc (left out where /proc cannot be read) and
// go_* from the runtime.
func RuntimeRegistry() *Registry {
	r := NewRegistry()
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		if st, err := parseProcStat(b); err == nil {
			r.CounterVec("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.").With().
				Set(float64(st.utime+st.stime) / userHZ)
			r.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").Set(float64(st.vsize))
			r.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.").
				Set(float64(st.rssPages * int64(os.Getpagesize())))
			if sb, err := os.ReadFile("/proc/stat"); err == nil {
				if boot, err := parseBootTime(sb); err == nil {
					r.Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.").
						Set(float64(boot) + float64(st.startTicks)/userHZ)
				}
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.Gauge("process_open_fds", "Number of open file descriptors.").Set(float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		r.Gauge("process_max_fds", "Maximum number of open file descriptors.").Set(float64(lim.Cur))
	}
	r.Gauge("go_goroutines", "Number of goroutines that currently exist.").Set(float64(runtime.NumGoroutine()))
	threads, _ := runtime.ThreadCreateProfile(nil)
	r.Gauge("go_threads", "Number of OS threads created.").Set(float64(threads))
	r.GaugeVec("go_info", "Information about the Go environment.", "version").With(runtime.Version()).Set(1)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.Gauge("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.").Set(float64(ms.HeapAlloc))
	r.Gauge("go_memstats_sys_bytes", "Number of bytes obtained from system.").Set(float64(ms.Sys))
	return r
}
