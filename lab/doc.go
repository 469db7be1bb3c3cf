// Package lab builds throwaway network namespaces, veth links and small
// topologies for syngate's end-to-end tests and demo. Everything it creates
// has a unique name, lives only inside namespaces it made, and is deleted
// on Close or at test cleanup, failures included.
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
// and friends) and is the only place addresses are written down.
package lab
