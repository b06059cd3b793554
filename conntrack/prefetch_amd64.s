#include "textflag.h"

// func prefetch(addr uintptr)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ addr+0(FP), AX
	PREFETCHT0 (AX)
	RET

// func prefetchFlow(flow uintptr)
TEXT ·prefetchFlow(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ flow+0(FP), AX
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	RET

// func prefetchEntry(flow, tcp uintptr)
TEXT ·prefetchEntry(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ flow+0(FP), AX
	MOVQ tcp+8(FP), BX
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	PREFETCHT0 (BX)
	RET
