package queue

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/conntrack/kernelct"
)

// CtStats is the flow table's size and counters in the statistics.
type CtStats struct {
	Entries int             `json:"entries"`
	Max     int             `json:"max"`
	Table   conntrack.Stats `json:"table"`
}

// Conntrack returns the daemon's flow table (nil with Config.NoConntrack).
func (d *Daemon) Conntrack() *conntrack.Table { return d.ct }

// WriteConntrackL writes the flow table as conntrack -L prints the
// kernel's, and returns the number of flows written.
func (d *Daemon) WriteConntrackL(w io.Writer) (int, error) {
	if d.ct == nil {
		return 0, nil
	}
	return d.ct.WriteConntrackL(w, time.Now())
}

func (d *Daemon) ctStats() *CtStats {
	if d.ct == nil {
		return nil
	}
	max := d.cfg.CtMax
	if max == 0 {
		max = conntrack.DefaultMaxEntries
	}
	return &CtStats{Entries: d.ct.Len(), Max: max, Table: d.ct.Stats()}
}

// startConntrack runs the flow table's sweeper and, with CtFollowKernel,
// follows the kernel's destroy events until ctx ends. A kernel that cannot
// be followed (no ctnetlink) is logged and the run goes on: the table then
// expires flows by its own timeouts, which are the kernel's. The
// returned function waits, once ctx has ended, until all of that has
// stopped touching the table.
func (d *Daemon) startConntrack(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	if d.ct == nil {
		return wg.Wait
	}
	wg.Go(func() { d.ct.Run(ctx, nil) })
	if !d.cfg.CtFollowKernel {
		return wg.Wait
	}
	kc, err := kernelct.Open(ctx, kernelct.Options{Logger: d.log})
	if err != nil {
		d.log.Warn("not following the kernel's conntrack (flows expire by their own timeouts)", "err", err)
		return
	}
	_, err = kc.Watch(ctx, kernelct.WatchOptions{}, kernelct.Expirer(func(t kernelct.Tuple) {
		if d.ct.Delete(t) {
			d.cnt.ctExpired.Add(1)
		}
	}, func() { d.resyncKernel(ctx, kc) }))
	if err != nil {
		kc.Close()
		d.log.Warn("not following the kernel's conntrack (flows expire by their own timeouts)", "err", err)
		return wg.Wait
	}
	wg.Go(func() {
		<-ctx.Done()
		kc.Close() // returns once the watcher's callback has
	})
	return wg.Wait
}

// endConntrack ends the flow table's life at the end of Run: stop
// cancels startConntrack's context, wait waits for its sweeper and
// kernel watcher, and the table's memory, much of which a large table
// maps outside the Go heap, is released (Table.Close). The readers and
// workers must have stopped: Close must not overlap a TrackBatch, whose
// lock-free prefetch pass reads the index. The table stays usable,
// empty, for what reads it later (Stats, metrics); a Daemon that runs
// again starts with no flows.
func (d *Daemon) endConntrack(stop context.CancelFunc, wait func()) {
	stop()
	wait()
	if d.ct != nil {
		d.ct.Close()
	}
}

// resyncKernel runs after destroy events were lost: every flow of qtables'
// table that the kernel no longer has is expired. A kernel table that is
// empty is taken to mean that the kernel does not track this namespace at
// all (nothing loaded its conntrack), not that every flow ended.
func (d *Daemon) resyncKernel(ctx context.Context, kc *kernelct.Conn) {
	ks, err := kc.List(ctx)
	if err != nil || len(ks) == 0 {
		if err != nil {
			d.log.Warn("conntrack resync after lost destroy events failed", "err", err)
		}
		return
	}
	have := make(map[conntrack.Tuple]bool, len(ks))
	for i := range ks {
		have[kernelct.Canonical(ks[i].Orig)] = true
	}
	var gone []conntrack.Tuple
	d.ct.Range(time.Now(), func(e *conntrack.Entry) bool {
		if o := e.Orig(); !have[o] {
			gone = append(gone, o)
		}
		return true
	})
	for _, t := range gone {
		if d.ct.Delete(t) {
			d.cnt.ctExpired.Add(1)
		}
	}
	d.log.Info("conntrack resynced with the kernel after lost destroy events", "expired", len(gone))
}
