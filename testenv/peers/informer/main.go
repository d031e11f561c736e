// Command informer is the client-go peer of `cargo xtask bench lazy`: one shared informer on every pod
// of the cluster, the cache a Go cluster agent (the Datadog Cluster Agent) holds, so the bench can set
// lazyscale's pod cache beside it on the same cluster in the same run.
//
// It connects with --kubeconfig, starts a SharedInformerFactory's pod informer cluster-wide (no
// selector, no transform, full Pod objects, resync off) and, once the informer has synced, prints one
// JSON line on stdout:
//
//	{"event":"synced","pods":N,"sync_seconds":S,"rss_bytes":R,"peak_rss_bytes":P,"heap_bytes":H,...}
//
// After that every line read on stdin prints one more such line with "event":"stats" (the cache stays
// live and keeps applying watch events in between); end of stdin stops the program.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// procStatus reads one "VmRSS:"-style field of /proc/self/status, in bytes (0 when unknown).
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, field) {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) < 2 {
			return 0
		}
		kb, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

type report struct {
	Event         string  `json:"event"`
	Pods          int     `json:"pods"`
	SyncSeconds   float64 `json:"sync_seconds"`
	RSSBytes      uint64  `json:"rss_bytes"`
	PeakRSSBytes  uint64  `json:"peak_rss_bytes"`
	HeapBytes     uint64  `json:"heap_bytes"`
	HeapInuse     uint64  `json:"heap_inuse_bytes"`
	HeapSys       uint64  `json:"heap_sys_bytes"`
	Goroutines    int     `json:"goroutines"`
	GoVersion     string  `json:"go_version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	userAgent := flag.String("user-agent", "lazyscale-bench-informer", "the client's user agent")
	flag.Parse()
	if err := run(*kubeconfig, *userAgent); err != nil {
		fmt.Fprintf(os.Stderr, "informer: %v\n", err)
		os.Exit(1)
	}
}

func run(kubeconfig, userAgent string) error {
	start := time.Now()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
	}
	cfg.UserAgent = userAgent
	// client-go's defaults (QPS 5, burst 10): an informer makes one list (or watch-list) and one watch.
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory := informers.NewSharedInformerFactory(client, 0)
	informer := factory.Core().V1().Pods().Informer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("the pod informer did not sync")
	}
	sync := time.Since(start).Seconds()
	out := json.NewEncoder(os.Stdout)
	emit := func(event string) error {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		n := len(informer.GetStore().ListKeys())
		return out.Encode(report{
			Event:         event,
			Pods:          n,
			SyncSeconds:   sync,
			RSSBytes:      procStatus("VmRSS:"),
			PeakRSSBytes:  procStatus("VmHWM:"),
			HeapBytes:     ms.HeapAlloc,
			HeapInuse:     ms.HeapInuse,
			HeapSys:       ms.HeapSys,
			Goroutines:    runtime.NumGoroutine(),
			GoVersion:     runtime.Version(),
			UptimeSeconds: time.Since(start).Seconds(),
		})
	}
	if err := emit("synced"); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if err := emit("stats"); err != nil {
			return err
		}
	}
	return nil
}
