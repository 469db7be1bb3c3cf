// Package lab builds throwaway network namespaces, veth links and small
// topologies for syngate's end-to-end tests and demo. Everything it creates
// has a unique name, lives only inside namespaces it made, and is deleted
// on Close or at test cleanup, failures included.
//
// It needs root and a kernel, no tools: namespaces are made with unshare(2)
// and a bind mount under /run/netns (where `ip netns` looks too), links,
// addresses, routes and neighbours over netlink (vishvananda/netlink),
// offloads with the ethtool ioctl, filters and loss rules with nftables
// over netlink (google/nftables). NS.Command runs a real program (syngate,
// a server) in a namespace by forking it from a thread that entered the
// namespace; unlike `ip netns exec` it does not remount /sys.
//
//	func TestThing(t *testing.T) {
//		lab.RequireRoot(t)
//		top, err := lab.NewTopology(t, lab.Options{})
//		if err != nil {
//			t.Fatal(err)
//		}
//		err = top.Client.Run(func() error {
//			c, err := net.Dial("tcp", netip.AddrPortFrom(lab.BackendV4.Addr(), 80).String())
//			...
//		})
//	}
//
// The address plan is documented next to the address variables (ClientV4
// and friends) and is the only place addresses are written down; the
// path-MTU topologies (NewPMTUTopology: two routers and a narrow link on
// one side) add theirs next to their builder, in pmtu.go.
package lab
