package integration

// Regression tests for defects found in review (issue items 7 to 13): an MTU change the shim
// did not follow, a removed gateway's MAC left in the hooks' map, a SIGHUP while starting, a
// stuck uplink stalling the frame loops, frames read cut short, and the hardening warnings of
// `check`.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/l2shim/l2shim/control"
)

// hookGatewayMACs returns the MACs in the gateway map of l2shim's egress hook on ifname in
// ns, sorted: the MACs whose frames the hooks divert.
func hookGatewayMACs(ns *NS, ifname string) ([]string, error) {
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", ns.Name, ifname, err)
	}
	idx := l.Attrs().Index
	var macs []string
	found := false
	err = ns.Do(func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return fmt.Errorf("query TCX egress of %s: %w", ifname, err)
		}
		for _, ap := range res.Programs {
			prog, err := ebpf.NewProgramFromID(ap.ID)
			if err != nil {
				continue
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil || info.Name != "l2shim_egress" {
				continue
			}
			ids, _ := info.MapIDs()
			for _, id := range ids {
				m, err := ebpf.NewMapFromID(id)
				if err != nil {
					return fmt.Errorf("map %d: %w", id, err)
				}
				mi, err := m.Info()
				if err == nil && mi.Name == "l2s_gws" {
					found = true
					var k [8]byte
					var v uint32
					it := m.Iterate()
					for it.Next(&k, &v) {
						macs = append(macs, net.HardwareAddr(k[:6]).String())
					}
					err = it.Err()
				}
				m.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil && !found {
		err = fmt.Errorf("no l2shim egress hook with a gateway map on %s", ifname)
	}
	sort.Strings(macs)
	return macs, err
}

// datapathCounter reads one of the status's datapath counters (0 when absent).
func datapathCounter(st *control.Status, name string) uint64 { return st.Datapath[name] }

// TestMTUChange (item 7): an MTU change of an external interface reaches the engine and the
// capture veths. Raising eth0's to 9000: the veths follow (a 9000-byte frame diverted from
// eth0 would otherwise die in its veth), so a full-size ping through the diverted path works;
// and the engine knows eth0's new MTU, so a 4000-byte DF datagram the host sends on eth0 but a
// rule places on eth1 (MTU 1500) is answered with a fragmentation-needed ("too-big"), not sent
// to fail on eth1's socket.
func TestMTUChange(t *testing.T) {
	topo := newTopo(t)
	const udpPort = 9099
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:  "failover",
		Extra: failoverTable(`probe_interval = "0s"`) + "\n\n" + routeToRule("big udp via eth1", "udp", udpPort, topo.HostIf1),
	})
	s.waitUp(t, topo.HostIf0, topo.HostIf1)

	mark := s.LogMark()
	if err := setMTU(topo.GW0, "lan", 9000); err != nil {
		t.Fatal(err)
	}
	if err := setMTU(topo.Host, topo.HostIf0, 9000); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WaitLog(mark, 3*time.Second, "interface MTU changed", "interface="+topo.HostIf0, "new=9000"); err != nil {
		t.Error(err)
	}
	links, err := topo.ShimLinks()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range links {
		l, err := topo.Host.Netlink().LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if mtu := l.Attrs().MTU; mtu < 9000 {
			t.Errorf("capture veth %s has MTU %d after eth0 went to 9000, want at least 9000", name, mtu)
		}
	}

	// 8000 bytes of ICMP, DF, to gw0: diverted both ways (gw0's MAC is in the hooks' map, and
	// the reply is addressed to eth0's), through the capture veths.
	out, err := topo.Host.Run(nil, "ping", "-n", "-M", "do", "-s", "8000", "-c", "3", "-i", "0.2", "-W", "1", topo.GW0Addr.String())
	t.Logf("ping -s 8000 %s: %s", topo.GW0Addr, lastLine(out))
	if err != nil {
		t.Errorf("a 8028-byte ping through the diverted path after the MTU grew: %v", err)
	}

	// A DF datagram larger than eth1's MTU, sent on eth0 (MTU 9000) and placed on eth1.
	before := s.status(t).Drops["too-big"]
	c, err := dialUDP(topo.Host, netip.AddrPort{}, netip.AddrPortFrom(topo.ServerAddr, udpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	payload := make([]byte, 4000)
	for range 3 {
		_, _ = c.Write(payload) // after the first answer the host's own path MTU refuses the rest
		time.Sleep(50 * time.Millisecond)
	}
	st, ok := s.waitStatus(t, 2*time.Second, func(st *control.Status) bool { return st.Drops["too-big"] > before })
	t.Logf("after the DF datagram: drops too-big %d, send_too_big %d", st.Drops["too-big"], datapathCounter(st, "send_too_big"))
	if !ok {
		t.Errorf("a 4028-byte DF datagram from eth0 (MTU 9000) placed on eth1 (MTU 1500) was not answered with fragmentation-needed: drops too-big %d", st.Drops["too-big"])
	}

	// Shrinking is followed too (the veths keep their larger MTU).
	mark = s.LogMark()
	if err := setMTU(topo.Host, topo.HostIf0, 1500); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WaitLog(mark, 3*time.Second, "interface MTU changed", "interface="+topo.HostIf0, "new=1500"); err != nil {
		t.Error(err)
	}
	spreadOrWork(t, topo, s)
	stopShim(t, s)
}

// spreadOrWork checks that new connections still work through the shim.
func spreadOrWork(t *testing.T, topo *Topology, s *testShim) {
	t.Helper()
	srv, err := StartTCPEcho(topo.Server, netip.AddrPortFrom(topo.ServerAddr, 7007))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if ok, errs := TCPEchoMany(context.Background(), topo.Host, srv.Addr, 10, 2, 3*time.Second); ok != 10 {
		t.Errorf("%d/10 connections through the shim:%s", ok, firstErrs(errs, 3))
	}
}

// mustIndex returns the ifindex of ifname in ns.
func mustIndex(t *testing.T, ns *NS, ifname string) int {
	t.Helper()
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestReloadGatewayMap (item 8): after a reload the hooks' gateway map holds exactly the
// gateways' MACs: a removed gateway's MAC goes, so the host's frames to it are no longer
// diverted.
func TestReloadGatewayMap(t *testing.T) {
	topo := newTopo(t)
	const ghostMAC = "02:4c:32:02:00:99"
	ghostAddr := netip.MustParseAddr("10.2.0.99")
	ghost := fmt.Sprintf("[[gateway]]\nname = \"ghost\"\ninterface = %q\naddress = %q\nmac = %q\n", topo.HostIf1, ghostAddr, ghostMAC)
	o := ConfigOptions{
		Mode:         "failover",
		Control:      filepath.Join(t.TempDir(), "l2shim.sock"),
		GatewayExtra: [2]string{`name = "isp-a"`, `name = "isp-b"`},
		Extra:        failoverTable(`probe_interval = "0s"`) + "\n\n" + ghost,
	}
	s := startShimCfg(t, topo, o)
	s.waitUp(t, "isp-a", "isp-b")
	st := s.status(t)
	var want []string
	for _, g := range st.Gateways {
		if g.MAC != "" {
			want = append(want, g.MAC)
		}
	}
	sort.Strings(want)
	got, err := hookGatewayMACs(topo.Host, topo.HostIf1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hooks' map at start: %v", got)
	if !strings.Contains(strings.Join(got, " "), ghostMAC) || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("hooks' map at start %v, want the gateways' MACs %v (ghost's %s among them)", got, want, ghostMAC)
	}

	// The host sends to the ghost's MAC (a static neighbour): diverted while it is a gateway.
	mustRun(t, topo.Host, "ip", "neigh", "replace", ghostAddr.String(), "lladdr", ghostMAC, "dev", topo.HostIf1, "nud", "permanent")
	framesOut := func() uint64 { return s.status(t).Datapath["frames_out"] }
	pingGhost := func() uint64 {
		t.Helper()
		before := framesOut()
		_, _ = topo.Host.Run(nil, "ping", "-n", "-c", "5", "-i", "0.05", "-W", "0.2", ghostAddr.String())
		time.Sleep(150 * time.Millisecond) // the status is refreshed every 100 ms
		return framesOut() - before
	}
	if n := pingGhost(); n < 5 {
		t.Errorf("before the reload, 5 pings to the ghost gateway's MAC: %d frames through the shim, want 5", n)
	}

	o.Extra = failoverTable(`probe_interval = "0s"`)
	s.writeConfig(t, o)
	out, errOut, code := s.cli(t, "reload")
	t.Logf("reload without the ghost: exit %d: %s%s", code, strings.TrimSpace(out), strings.TrimSpace(errOut))
	if code != 0 {
		t.Fatalf("reload: exit %d", code)
	}
	want = want[:0]
	for _, g := range s.status(t).Gateways {
		if g.MAC != "" {
			want = append(want, g.MAC)
		}
	}
	sort.Strings(want)
	got, err = hookGatewayMACs(topo.Host, topo.HostIf1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hooks' map after the reload: %v (gateways' MACs %v)", got, want)
	if strings.Join(got, " ") != strings.Join(want, " ") || len(want) != 2 {
		t.Errorf("hooks' map after the reload %v, want exactly the gateways' MACs %v", got, want)
	}
	if n := pingGhost(); n != 0 {
		t.Errorf("after the reload removed the ghost gateway, 5 pings to its MAC: %d frames still diverted through the shim, want 0", n)
	}
	stopShim(t, s)
}

// TestSIGHUPWhileStarting (item 9): SIGHUPs sent while l2shim is still starting neither kill
// nor crash it; they are applied once it runs (one reload).
func TestSIGHUPWhileStarting(t *testing.T) {
	topo := newTopo(t)
	bin := needShim(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "l2shim.sock")
	cfgPath := filepath.Join(dir, "l2shim.toml")
	if err := os.WriteFile(cfgPath, []byte(topo.Config(ConfigOptions{Control: sock})), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &outBuf{ready: make(chan struct{})}
	cmd := exec.Command("ip", "netns", "exec", topo.Host.Name, bin, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process is gone; waitErr is then its exit.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("l2shim output:\n%s", out.String())
		}
	}()

	// `run` holds the instance lock from the start of setting up; by then it has caught
	// SIGHUP (before, the signal's default would end it: that is not what is tested).
	lockHeld := func() bool {
		f, err := os.OpenFile(sock+".lock", os.O_RDWR, 0)
		if err != nil {
			return false
		}
		defer f.Close()
		return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for !lockHeld() {
		if time.Now().After(deadline) {
			t.Fatal("l2shim did not take its lock within 20 s")
		}
		select {
		case <-exited:
			t.Fatalf("l2shim exited before taking its lock: %v", waitErr)
		case <-time.After(200 * time.Microsecond):
		}
	}
	sent := 0
	for running := false; !running; {
		if time.Now().After(deadline) {
			t.Fatal("l2shim not running within 20 s")
		}
		select {
		case <-exited:
			t.Fatalf("l2shim exited while starting, after %d SIGHUPs: %v", sent, waitErr)
		case <-out.ready:
			running = true
		case <-time.After(time.Millisecond):
			// select picks at random among ready cases: once l2shim runs, a SIGHUP would be
			// an ordinary reload of its own, not one kept from starting.
			select {
			case <-out.ready:
				running = true
				continue
			default:
			}
			if err := cmd.Process.Signal(syscall.SIGHUP); err == nil {
				sent++
			}
		}
	}
	t.Logf("%d SIGHUPs while starting", sent)
	if sent == 0 {
		t.Fatal("no SIGHUP reached l2shim while it started")
	}
	// The kept SIGHUP becomes one reload once running.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "msg=\"reloaded "); {
		if time.Now().After(deadline) {
			t.Fatal("no reload logged within 5 s of running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := control.Call(sock, control.Request{Command: "status"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status.Reloads != 1 {
		t.Errorf("status reloads = %d after SIGHUPs while starting, want 1", resp.Status.Reloads)
	}
	if strings.Contains(out.String(), "panic") {
		t.Error("l2shim logged a panic")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("l2shim exit after SIGTERM: %v", waitErr)
		}
	case <-time.After(15 * time.Second):
		t.Error("l2shim still running 15 s after SIGTERM")
	}
}

// TestStuckUplink (item 10): an uplink whose queue does not drain (a qdisc holding every
// frame, as a wedged NIC would) fills its wire socket's send buffer; the frame loop that
// sends to it must drop and count instead of waiting, so flows on the other uplink, handled
// by the same loop, go on.
func TestStuckUplink(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	const floodPort = 9098
	s := startShimCfg(t, topo, ConfigOptions{
		Mode:  "failover", // new flows on gw0 (eth0), except the flood the rule puts on eth1
		Extra: failoverTable(`probe_interval = "0s"`) + "\n\n" + routeToRule("flood via eth1", "udp", floodPort, topo.HostIf1),
	})
	s.waitUp(t, topo.HostIf0, topo.HostIf1)
	ctx := context.Background()
	if ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 5, 1, 3*time.Second); ok != 5 {
		t.Fatalf("before: %d/5 connections:%s", ok, firstErrs(errs, 3))
	}

	// eth1 drains 1 kbit/s into a queue of 100 MB: nothing sent there leaves, nor frees its
	// socket's buffer, for the length of the test.
	mustRun(t, topo.Host, "tc", "qdisc", "replace", "dev", topo.HostIf1, "root", "tbf", "rate", "1kbit", "burst", "1600", "limit", "100000000")
	defer func() { _, _ = topo.Host.Run(nil, "tc", "qdisc", "del", "dev", topo.HostIf1, "root") }()

	// The flood: sent by the host on eth0 (its default route), placed by the rule on eth1,
	// so eth0's frame loop is the one writing to the stuck socket. Bounded: 40,000 datagrams
	// of 1,400 bytes (about 2.5 times the socket's 16 MiB buffer), 10 s at most.
	c, err := dialUDP(topo.Host, netip.AddrPort{}, netip.AddrPortFrom(topo.ServerAddr, floodPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1400)
	end := time.Now().Add(10 * time.Second)
	sent := 0
	for ; sent < 40000 && time.Now().Before(end); sent++ {
		// Nothing listens on the port: the server's port unreachable, while it still gets
		// through, makes the next write fail with ECONNREFUSED.
		if _, err := c.Write(payload); err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("flood: %v", err)
		}
		if sent%2000 == 1999 {
			time.Sleep(20 * time.Millisecond) // let the loop keep up, so its socket is what fills
		}
	}
	st, full := s.waitStatus(t, 5*time.Second, func(st *control.Status) bool { return datapathCounter(st, "send_full") > 0 })
	t.Logf("flood of %d datagrams: send_full %d, send_errors %d", sent, datapathCounter(st, "send_full"), datapathCounter(st, "send_errors"))
	if !full {
		t.Errorf("the stuck uplink's socket never reported full (send_full 0): the test did not stuff it")
	}

	// eth0's loop must still move frames: new connections through gw0 work at once.
	start := time.Now()
	ok, errs := TCPEchoMany(ctx, topo.Host, srv.echoAddr(), 10, 2, 2*time.Second)
	t.Logf("while eth1 is stuck: %d/10 connections through gw0 in %v", ok, time.Since(start).Round(time.Millisecond))
	if ok != 10 {
		t.Errorf("while eth1 is stuck: %d/10 connections through gw0 (eth0's frame loop waits on eth1's socket):%s", ok, firstErrs(errs, 3))
	}
	if st.Datapath["send_errors"] < st.Datapath["send_full"] {
		t.Errorf("send_full %d not counted in send_errors %d", st.Datapath["send_full"], st.Datapath["send_errors"])
	}
	totals := stopShim(t, s)
	if totals["send_full"] == "" || totals["send_full"] == "0" {
		t.Errorf("the totals logged at stop have send_full=%q", totals["send_full"])
	}
}

// TestTruncatedReads (item 11): frames larger than the shim's 64 KiB read buffer (BIG TCP
// super-frames from eth0 with gso_ipv4_max_size above 64 KiB) are counted as truncated (and
// lost), never sent on cut short.
func TestTruncatedReads(t *testing.T) {
	topo := newTopo(t)
	srv := startServers(t, topo)
	// The slow path reads what the kernel hands over; with the fast path the kernel carries
	// the established upload and no super-frame reaches user space at all.
	s := startShimCfg(t, topo, ConfigOptions{Mode: "failover", Extra: failoverTable(`probe_interval = "0s"`), RunArgs: []string{"--no-fast-path"}})
	s.waitUp(t, topo.HostIf0, topo.HostIf1)

	// BIG TCP on eth0, and on the capture veth of eth0 too: with the veth's default
	// gso_max_size (64 KiB) this kernel cuts larger super-frames into segments before they
	// reach l2shim; kernels and settings that let them through hand l2shim frames larger than
	// its read buffer.
	// The host's frames are captured through l2sNo (the wire's through l2sNn).
	near := fmt.Sprintf("l2s%do", mustIndex(t, topo.Host, topo.HostIf0))
	const big = 185000
	for _, name := range []string{topo.HostIf0, near} {
		l, err := topo.Host.Netlink().LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := topo.Host.Netlink().LinkSetGSOMaxSize(l, big); err != nil {
			t.Fatalf("cannot turn BIG TCP on (gso_max_size %d on %s; Linux 6.3 or later): %v", big, name, err)
		}
		if err := topo.Host.Netlink().LinkSetGSOIPv4MaxSize(l, big); err != nil {
			t.Fatalf("cannot turn IPv4 BIG TCP on (gso_ipv4_max_size %d on %s; Linux 6.3 or later): %v", big, name, err)
		}
	}
	before := s.status(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	res, err := Upload(ctx, topo.Host, srv.bulkAddr(), 64<<20, 3, From(topo.HostAddr0))
	t.Logf("64 MiB upload over eth0 with BIG TCP: %d bytes in %v: %v", res.Bytes, res.Elapsed.Round(time.Millisecond), err)
	st, ok := s.waitStatus(t, 2*time.Second, func(st *control.Status) bool { return datapathCounter(st, "truncated") > 0 })
	trunc := datapathCounter(st, "truncated")
	lost := datapathCounter(st, "lost") - datapathCounter(before, "lost")
	malformed := st.Drops["malformed"] - before.Drops["malformed"]
	t.Logf("truncated %d, lost %d, malformed drops %d", trunc, lost, malformed)
	if !ok {
		t.Errorf("no frame counted as truncated: super-frames over 64 KiB were not detected")
	}
	if lost < trunc {
		t.Errorf("lost grew by %d, less than the %d truncated frames", lost, trunc)
	}
	if malformed > 0 {
		t.Errorf("%d frames reached the engine cut short (malformed drops)", malformed)
	}
	if l := s.LogLines(0, "level=WARN", "larger than 64 KiB dropped"); len(l) != 1 {
		t.Errorf("%d warnings about frames larger than 64 KiB logged, want 1", len(l))
	}
	stopShim(t, s)
}

// TestHardeningWarnings (item 13): `check` and `run` warn about a metrics endpoint on every
// address, about the host's fwmark rules that use l2shim's mark bits, and about BIG TCP on an
// uplink (item 11: l2shim drops its super-frames).
func TestHardeningWarnings(t *testing.T) {
	topo := newTopo(t)
	mustRun(t, topo.Host, "ip", "rule", "add", "fwmark", "0xa0/0xf0", "lookup", "100", "priority", "1000")
	mustRun(t, topo.Host, "ip", "rule", "add", "fwmark", "0x4000", "lookup", "101", "priority", "1001")
	l, err := topo.Host.Netlink().LinkByName(topo.HostIf1)
	if err != nil {
		t.Fatal(err)
	}
	bigTCP := topo.Host.Netlink().LinkSetGSOIPv4MaxSize(l, 185000) == nil
	o := ConfigOptions{Control: filepath.Join(t.TempDir(), "l2shim.sock"), ShimExtra: `metrics = ":9464"`}
	out, code := runShimCommand(t, topo, "check", topo.Config(o))
	t.Logf("check: exit %d:\n%s", code, out)
	if code != 0 {
		t.Fatalf("check: exit %d", code)
	}
	for _, w := range []string{
		`shim.metrics: ":9464" listens on every address of the host`,
		`shim.mark_mask: the host's ip rule "1000: fwmark 0xa0/0xf0 lookup 100" routes by mark bits l2shim owns`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("check does not warn %q", w)
		}
	}
	if strings.Contains(out, "0x4000") {
		t.Errorf("check warns about a rule on bits l2shim does not own (0x4000)")
	}
	if w := "eth1 has BIG TCP on (gso_ipv4_max_size 185000"; bigTCP && !strings.Contains(out, w) {
		t.Errorf("check does not warn %q", w)
	}
	s := startShimCfg(t, topo, o)
	for _, w := range []string{"listens on every address", "routes by mark bits l2shim owns"} {
		if l := s.LogLines(0, "level=WARN", w); len(l) != 1 {
			t.Errorf("run logged %d warnings with %q, want 1", len(l), w)
		}
	}
	stopShim(t, s)
}
