//go:build !linux

package conntrack

import "errors"

const canMap = false

func mapRegion(int) (raw, usable []byte, err error) { return nil, nil, errors.ErrUnsupported }

func unmapRegion([]byte) {}
