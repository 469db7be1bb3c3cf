package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Nftables calls fn with an nftables connection to the namespace. Changes
// queued on it take effect at c.Flush.
func (ns *NS) Nftables(fn func(c *nftables.Conn) error) error {
	fd, err := ns.fd()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return fmt.Errorf("%s: nftables: %w", ns.name, err)
	}
	if err := fn(c); err != nil {
		return fmt.Errorf("%s: nftables: %w", ns.name, err)
	}
	return nil
}

// FilterHook places a Filter's chain.
type FilterHook struct {
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority // default: filter (0)
	// Device names the interface of an ingress chain; it puts the filter
	// in the netdev family (otherwise inet, for IPv4 and IPv6).
	Device string
}

// The usual places of a filter.
var (
	HookOutput     = FilterHook{Hook: nftables.ChainHookOutput}
	HookInput      = FilterHook{Hook: nftables.ChainHookInput}
	HookForward    = FilterHook{Hook: nftables.ChainHookForward}
	HookPrerouting = FilterHook{Hook: nftables.ChainHookPrerouting}
)

// HookIngress is the ingress hook of one interface: frames as the driver
// delivers them, before the IP stack (and after XDP).
func HookIngress(device string) FilterHook {
	return FilterHook{Hook: nftables.ChainHookIngress, Device: device}
}

// Filter is an nftables table holding one base chain that accepts by
// default, in a namespace; its rules count what they match and drop it or
// let it pass.
type Filter struct {
	ns    *NS
	table *nftables.Table
	chain *nftables.Chain
	rules int
}

// NewFilter creates the table name with its chain at hook. Deleting the
// namespace deletes the filter too; Delete removes it earlier.
func (ns *NS) NewFilter(name string, hook FilterHook) (*Filter, error) {
	fam := nftables.TableFamilyINet
	if hook.Device != "" {
		fam = nftables.TableFamilyNetdev
	}
	prio := hook.Priority
	if prio == nil {
		prio = nftables.ChainPriorityFilter
	}
	f := &Filter{ns: ns, table: &nftables.Table{Name: name, Family: fam}}
	accept := nftables.ChainPolicyAccept
	f.chain = &nftables.Chain{
		Name: "filter", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: hook.Hook, Priority: prio, Device: hook.Device, Policy: &accept,
	}
	err := ns.Nftables(func(c *nftables.Conn) error {
		c.AddTable(f.table)
		c.AddChain(f.chain)
		return c.Flush()
	})
	if err != nil {
		return nil, fmt.Errorf("create filter %s: %w", name, err)
	}
	return f, nil
}

// Family is the table's family, which Match.Exprs needs.
func (f *Filter) Family() nftables.TableFamily { return f.table.Family }

// Rule is one counting rule of a Filter.
type Rule struct {
	f     *Filter
	index int
}

// Drop appends a rule that counts and drops what m matches.
func (f *Filter) Drop(m Match) (*Rule, error) {
	return f.Add(m, &expr.Verdict{Kind: expr.VerdictDrop})
}

// Count appends a rule that counts what m matches and lets it pass.
func (f *Filter) Count(m Match) (*Rule, error) {
	return f.Add(m)
}

// Add appends a rule: m's match, a counter, then stmts (a verdict,
// notrack, synproxy ...).
func (f *Filter) Add(m Match, stmts ...expr.Any) (*Rule, error) {
	exprs, err := m.Exprs(f.table.Family)
	if err != nil {
		return nil, err
	}
	exprs = append(exprs, &expr.Counter{})
	exprs = append(exprs, stmts...)
	err = f.ns.Nftables(func(c *nftables.Conn) error {
		c.AddRule(&nftables.Rule{Table: f.table, Chain: f.chain, Exprs: exprs})
		return c.Flush()
	})
	if err != nil {
		return nil, fmt.Errorf("add rule to %s: %w", f.table.Name, err)
	}
	r := &Rule{f: f, index: f.rules}
	f.rules++
	return r, nil
}

// Delete removes the filter's table.
func (f *Filter) Delete() error {
	return f.ns.Nftables(func(c *nftables.Conn) error {
		c.DelTable(f.table)
		return c.Flush()
	})
}

// Packets reads the rule's counter.
func (r *Rule) Packets() (uint64, error) {
	var n uint64
	err := r.f.ns.Nftables(func(c *nftables.Conn) error {
		rules, err := c.GetRules(r.f.table, r.f.chain)
		if err != nil {
			return err
		}
		if r.index >= len(rules) {
			return fmt.Errorf("table %s has %d rules, not %d", r.f.table.Name, len(rules), r.index+1)
		}
		for _, e := range rules[r.index].Exprs {
			if c, ok := e.(*expr.Counter); ok {
				n = c.Packets
				return nil
			}
		}
		return errors.New("rule has no counter")
	})
	return n, err
}

// AddLoss drops percent (1-99) of the TCP packets leaving the namespace,
// at random (nftables `meta l4proto tcp numgen random mod 100 < percent
// drop` in the output hook, table inet sgloss), to test recovery from
// loss. The returned rule counts what it dropped. Call it once per
// namespace; deleting the namespace removes the rule.
func (ns *NS) AddLoss(percent int) (*Rule, error) {
	f, err := ns.NewFilter("sgloss", HookOutput)
	if err != nil {
		return nil, err
	}
	return f.Drop(Match{Proto: unix.IPPROTO_TCP, Percent: percent})
}

// Match selects packets. Zero fields match anything; a packet matches when
// every set field does.
type Match struct {
	Src     netip.Prefix // source address within
	Dst     netip.Addr   // destination address
	Proto   uint8        // IP protocol (unix.IPPROTO_TCP, ...); required by DstPort and TCPFlags
	DstPort uint16       // TCP or UDP destination port
	// TCPFlagsMask selects TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04,
	// PSH 0x08, ACK 0x10); the packet matches when its flags under the
	// mask equal TCPFlags.
	TCPFlagsMask, TCPFlags uint8
	// Percent, 1-99, matches that share of the packets that match the
	// rest, at random.
	Percent int
}

// TCP flag bits for Match.TCPFlagsMask and TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
)

// Exprs compiles the match into nftables expressions for a table of the
// given family, as nft compiles the equivalent rule.
func (m Match) Exprs(fam nftables.TableFamily) ([]expr.Any, error) {
	var out []expr.Any
	cmp := func(op expr.CmpOp, data []byte) {
		out = append(out, &expr.Cmp{Op: op, Register: 1, Data: data})
	}
	if m.Src.IsValid() || m.Dst.IsValid() {
		is6 := m.Dst.Is6()
		if m.Src.IsValid() {
			is6 = m.Src.Addr().Is6()
			if m.Dst.IsValid() && m.Dst.Is6() != is6 {
				return nil, fmt.Errorf("match %v -> %v: mixed address families", m.Src, m.Dst)
			}
		}
		switch fam {
		case nftables.TableFamilyNetdev, nftables.TableFamilyBridge:
			out = append(out, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1})
			proto := uint16(unix.ETH_P_IP)
			if is6 {
				proto = unix.ETH_P_IPV6
			}
			cmp(expr.CmpOpEq, binary.BigEndian.AppendUint16(nil, proto))
		case nftables.TableFamilyINet:
			out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1})
			proto := byte(unix.NFPROTO_IPV4)
			if is6 {
				proto = unix.NFPROTO_IPV6
			}
			cmp(expr.CmpOpEq, []byte{proto})
		}
		srcOff, dstOff := uint32(12), uint32(16) // IPv4 header
		if is6 {
			srcOff, dstOff = 8, 24
		}
		if m.Src.IsValid() {
			p := m.Src.Masked()
			n := uint32(p.Addr().BitLen() / 8)
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: srcOff, Len: n})
			if p.Bits() < p.Addr().BitLen() {
				mask := ipNet(p).Mask
				out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
			}
			cmp(expr.CmpOpEq, p.Addr().AsSlice())
		}
		if m.Dst.IsValid() {
			n := uint32(m.Dst.BitLen() / 8)
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dstOff, Len: n})
			cmp(expr.CmpOpEq, m.Dst.AsSlice())
		}
	}
	if (m.DstPort != 0 || m.TCPFlagsMask != 0) && m.Proto == 0 {
		return nil, errors.New("match on a port or TCP flags needs Proto")
	}
	if m.TCPFlagsMask != 0 && m.Proto != unix.IPPROTO_TCP {
		return nil, errors.New("match on TCP flags needs Proto TCP")
	}
	if m.Proto != 0 {
		out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1})
		cmp(expr.CmpOpEq, []byte{m.Proto})
	}
	if m.DstPort != 0 {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		cmp(expr.CmpOpEq, binary.BigEndian.AppendUint16(nil, m.DstPort))
	}
	if m.TCPFlagsMask != 0 {
		out = append(out,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{m.TCPFlagsMask}, Xor: []byte{0}})
		cmp(expr.CmpOpEq, []byte{m.TCPFlags & m.TCPFlagsMask})
	}
	if m.Percent != 0 {
		if m.Percent < 1 || m.Percent > 99 {
			return nil, fmt.Errorf("match percent %d: want 1-99", m.Percent)
		}
		// numgen leaves a host-order number; cmp compares bytes, so
		// convert to network order first, as nft does.
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4})
		cmp(expr.CmpOpLt, binary.BigEndian.AppendUint32(nil, uint32(m.Percent)))
	}
	return out, nil
}
