package queue

import (
	"net"
	"sync"
)

// ifaceInfo is what judging needs to know about a network device.
type ifaceInfo struct {
	name     string
	mac      [6]byte
	ether    bool // a 6-byte hardware address: Ethernet-like
	loopback bool
}

// ifaceCache maps interface indexes (NFQUEUE gives indexes, rules name
// devices) to names and addresses. Lookups read a map under a read lock
// and do not allocate; a miss asks the kernel. Refresh drops everything so
// that renamed or re-created devices are picked up: the daemon calls it
// periodically.
type ifaceCache struct {
	mu sync.RWMutex
	m  map[uint32]ifaceInfo
	// lookup is net.InterfaceByIndex, replaceable in tests.
	lookup func(int) (*net.Interface, error)
}

func newIfaceCache() *ifaceCache {
	return &ifaceCache{m: map[uint32]ifaceInfo{}, lookup: net.InterfaceByIndex}
}

// get returns the device with index idx; ok is false when it no longer
// exists.
func (c *ifaceCache) get(idx uint32) (ifaceInfo, bool) {
	c.mu.RLock()
	info, ok := c.m[idx]
	c.mu.RUnlock()
	if ok {
		return info, true
	}
	ifi, err := c.lookup(int(idx))
	if err != nil {
		return ifaceInfo{}, false
	}
	info = ifaceInfo{name: ifi.Name, loopback: ifi.Flags&net.FlagLoopback != 0}
	if len(ifi.HardwareAddr) == 6 {
		info.ether = true
		copy(info.mac[:], ifi.HardwareAddr)
	}
	c.mu.Lock()
	c.m[idx] = info
	c.mu.Unlock()
	return info, true
}

// refresh forgets every device.
func (c *ifaceCache) refresh() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}
