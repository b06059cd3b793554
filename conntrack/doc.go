// Package conntrack is qtables' own connection tracking table: the state
// that -m state, -m conntrack, connlimit, connmark, connbytes and CONNMARK
// read and write, decided the way Linux's nf_conntrack decides it.
package conntrack
