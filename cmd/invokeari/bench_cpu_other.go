//go:build !unix

package main

import "time"

// processCPU is not available here; per-core figures fall back to wall time.
func processCPU() (time.Duration, bool) { return 0, false }

// pidCPU is not available here.
func pidCPU(int) (time.Duration, bool) { return 0, false }
