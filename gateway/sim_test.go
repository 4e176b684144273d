package gateway

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/config"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/convergence/mem"
	"github.com/mulegate/mulegate/policy/identity"
)

// simNodes starts n nodes on one in-memory network.
func simNodes(t *testing.T, count int, tweak func(*config.Config)) ([]*Node, *mem.Network) {
	t.Helper()
	network := mem.NewNetwork()
	nodes := make([]*Node, count)
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := range nodes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cfg := testConfig(t, fmt.Sprintf("n%02d", i))
			cfg.Routing.SummaryInterval = 300 * time.Millisecond
			if tweak != nil {
				tweak(cfg)
			}
			id, _ := cfg.NodeID()
			ident, err := identity.Generate(id.String(), time.Hour)
			if err != nil {
				errs <- err
				return
			}
			trust, _ := identity.NewTrust(nil, nil)
			n, err := New(Options{Config: cfg, Identity: ident, Trust: trust, Layer: func(sink convergence.Sink, events func(convergence.Event)) (convergence.Layer, error) {
				return network.NewLayer(id, sink, events), nil
			}})
			if err != nil {
				errs <- err
				return
			}
			if err := n.Start(context.Background()); err != nil {
				errs <- err
				return
			}
			nodes[i] = n
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func(n *Node) { defer wg.Done(); n.Close() }(n)
		}
		wg.Wait()
	})
	return nodes, network
}

func transmissions(nodes []*Node) float64 {
	total := 0.0
	for _, n := range nodes {
		total += counterValue(n, "mulegate_bundles_transmitted_total")
	}
	return total
}

// TestRingSelectionReachesEveryNode: 32 nodes all in contact with each
// other, each forwarding to only L = 2 peers chosen on the ring; a bundle
// from every node to a group they all belong to reaches every node.
func TestRingSelectionReachesEveryNode(t *testing.T) {
	const count, limit = 32, 2
	nodes, _ := simNodes(t, count, func(c *config.Config) { c.Routing.PeerLimit = limit })
	ctx := context.Background()
	group := bundle.MustParseEID("dtn://~all/sim")
	for _, n := range nodes {
		if err := n.Register(ctx, group); err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if _, err := a.layer.Dial(ctx, b.ListenAddrs()[0], b.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	for i, n := range nodes {
		body := []byte(fmt.Sprintf("from %d", i))
		if _, err := n.Send(ctx, SendRequest{Destination: group, Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	last := time.Now()
	waitFor(t, "every node to receive every bundle", func() bool {
		done := true
		var counts []int
		for _, n := range nodes {
			got, _ := n.Deliveries(ctx, group, 100)
			counts = append(counts, len(got))
			if len(got) != count {
				done = false
			}
		}
		if !done && time.Since(last) > 5*time.Second {
			last = time.Now()
			t.Logf("deliveries per node so far: %v; transmissions %.0f", counts, transmissions(nodes))
		}
		return done
	})
	for _, n := range nodes {
		if sel := countSelected(n); sel != limit {
			t.Errorf("%s pushes to %d peers, want %d", n.ID(), sel, limit)
		}
	}
	tx := transmissions(nodes)
	t.Logf("ring L=%d, %d nodes: all %d bundles everywhere after %v; %.0f transmissions (%.1f per bundle per node; a full mesh flood would be up to %d)",
		limit, count, count, time.Since(start).Round(time.Millisecond), tx, tx/float64(count*(count-1)), count-1)
}

// counterValue sums a counter's series in a node's metrics.
func counterValue(n *Node, name string) float64 {
	families, err := n.metrics.reg.Gather()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func countSelected(n *Node) int {
	c := 0
	for _, p := range n.Peers() {
		if p.Selected {
			c++
		}
	}
	return c
}

// TestSimulation compares the routing strategies on 32 nodes that meet at
// random: each step, random pairs are in contact for a while. It reports
// delivery ratio, latency and overhead (transmissions per delivered bundle).
func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulation runs for a minute; -short skips it")
	}
	type result struct {
		name                 string
		ratio, overhead      float64
		medianLatency, p90La time.Duration
	}
	var results []result
	for _, sc := range []struct {
		name  string
		tweak func(*config.Config)
	}{
		{"epidemic", func(c *config.Config) {}},
		{"epidemic, ring L=2", func(c *config.Config) { c.Routing.PeerLimit = 2 }},
		{"spray-and-wait L=6", func(c *config.Config) { c.Routing.Strategy = "spray-and-wait"; c.Routing.SprayCopies = 6 }},
	} {
		r := runSimulation(t, sc.tweak)
		r.name = sc.name
		results = append(results, result{sc.name, r.ratio, r.overhead, r.median, r.p90})
	}
	t.Logf("%-22s %9s %12s %12s %10s", "strategy", "delivered", "median lat.", "p90 lat.", "overhead")
	for _, r := range results {
		t.Logf("%-22s %8.0f%% %12v %12v %10.2f", r.name, 100*r.ratio, r.medianLatency.Round(time.Millisecond), r.p90La.Round(time.Millisecond), r.overhead)
	}
	if results[2].overhead >= results[0].overhead {
		t.Errorf("spray-and-wait overhead %.2f is not below epidemic's %.2f", results[2].overhead, results[0].overhead)
	}
}

type simResult struct {
	name        string
	ratio       float64
	overhead    float64
	median, p90 time.Duration
}

// runSimulation: 32 nodes; every 200 ms, four random pairs meet for 600 ms;
// 64 bundles between random nodes. The figures are taken after 20 s of
// contacts; then contacts go on until every bundle is delivered, which must
// happen (the test fails at its generous deadline otherwise): every
// strategy must deliver, only the cost and the delay differ.
func runSimulation(t *testing.T, tweak func(*config.Config)) simResult {
	const count, bundles = 32, 64
	nodes, _ := simNodes(t, count, tweak)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(42, 7)) // the same contacts for every strategy
	type sent struct {
		id  bundle.ID
		dst int
		at  time.Time
	}
	var all []sent
	for i := 0; i < bundles; i++ {
		src, dst := r.IntN(count), r.IntN(count)
		for dst == src {
			dst = r.IntN(count)
		}
		to, _ := nodes[dst].ID().Join("inbox")
		body := []byte(fmt.Sprintf("bundle %d", i))
		id, err := nodes[src].Send(ctx, SendRequest{Destination: to, Lifetime: time.Hour, Length: uint64(len(body))}, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sent{id, dst, time.Now()})
	}
	var open []convergence.Session
	horizon := time.Now().Add(20 * time.Second)
	deadline := time.Now().Add(5 * time.Minute)
	delivered := map[bundle.ID]time.Duration{}
	var res simResult
	measured := false
	measure := func() {
		var lat []time.Duration
		for _, d := range delivered {
			lat = append(lat, d)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		res = simResult{ratio: float64(len(delivered)) / bundles}
		if len(lat) > 0 {
			res.median, res.p90 = lat[len(lat)/2], lat[len(lat)*9/10]
			res.overhead = transmissions(nodes) / float64(len(delivered))
		}
		measured = true
	}
	for len(delivered) < bundles {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bundles delivered after 5 minutes of contacts", len(delivered), bundles)
		}
		if !measured && time.Now().After(horizon) {
			measure()
		}
		for k := 0; k < 4; k++ {
			a, b := r.IntN(count), r.IntN(count)
			if a == b {
				continue
			}
			s, err := nodes[a].layer.Dial(ctx, nodes[b].ListenAddrs()[0], nodes[b].ID())
			if err == nil {
				open = append(open, s)
				go func(s convergence.Session) { time.Sleep(600 * time.Millisecond); s.Close(nil) }(s)
			}
		}
		time.Sleep(200 * time.Millisecond) // the mobility model's clock
		for _, s := range all {
			if _, ok := delivered[s.id]; ok {
				continue
			}
			to, _ := nodes[s.dst].ID().Join("inbox")
			got, _ := nodes[s.dst].Deliveries(ctx, to, 100)
			for _, m := range got {
				if m.ID == s.id {
					delivered[s.id] = m.ReceivedAt.Sub(s.at)
				}
			}
		}
	}
	for _, s := range open {
		s.Close(nil)
	}
	if !measured {
		measure()
	}
	return res
}
