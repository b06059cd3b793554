#include "textflag.h"

// func prefetch(addr uintptr)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-8
	MOVD addr+0(FP), R0
	PRFM (R0), PLDL1KEEP
	RET

// func prefetchFlow(flow uintptr)
TEXT ·prefetchFlow(SB), NOSPLIT|NOFRAME, $0-8
	MOVD flow+0(FP), R0
	PRFM (R0), PLDL1KEEP
	PRFM 64(R0), PLDL1KEEP
	RET

// func prefetchEntry(flow, tcp uintptr)
TEXT ·prefetchEntry(SB), NOSPLIT|NOFRAME, $0-16
	MOVD flow+0(FP), R0
	MOVD tcp+8(FP), R1
	PRFM (R0), PLDL1KEEP
	PRFM 64(R0), PLDL1KEEP
	PRFM (R1), PLDL1KEEP
	RET
