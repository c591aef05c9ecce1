/*
 * net_proto: the pure packet code of the `net` guest (Ethernet, ARP, IPv4,
 * ICMP echo, UDP echo). No device access and no globals: every function works
 * on caller-owned buffers, so the same code can be exercised on the host.
 *
 * The includer must declare memcpy and memset first (rt/rt.h in the guest,
 * <string.h> on the host).
 *
 * Frames from the network are hostile input: np_handle checks every length
 * before reading the field it covers, and never writes past `cap` bytes of
 * its output buffer. Addresses are kept in host byte order.
 */
#ifndef COMPUTED_NET_PROTO_H
#define COMPUTED_NET_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define NP_ETH_HLEN 14u
#define NP_ETH_MIN 60u    /* shortest Ethernet frame (without FCS); we pad to it */
#define NP_FRAME_MAX 1514u /* longest frame we send: 1500-byte MTU + header */
#define NP_ETYPE_IP 0x0800u
#define NP_ETYPE_ARP 0x0806u
#define NP_ARP_LEN 28u
#define NP_IP_HLEN 20u
#define NP_PROTO_ICMP 1u
#define NP_PROTO_UDP 17u
#define NP_ARP_CACHE 8u
#define NP_PING_PAYLOAD 56u

struct np_arp_entry {
	uint32_t ip;
	uint8_t mac[6];
	uint8_t valid;
};

struct np_state {
	uint8_t mac[6];
	uint32_t ip, mask, gw; /* gw 0: none */
	uint16_t udp_port;     /* 0: UDP echo off */
	uint16_t ip_id;
	uint16_t ping_id;
	struct np_arp_entry arp[NP_ARP_CACHE];
	unsigned arp_next;
	/* Set by np_handle when the frame was an echo reply carrying ping_id. */
	int echo_seen;
	uint32_t echo_from;
	uint16_t echo_seq;
};

/* ---- byte order and small helpers ------------------------------------------- */

static inline uint16_t np_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t np_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void np_put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void np_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline int np_mac_eq(const uint8_t *a, const uint8_t *b)
{
	for (unsigned i = 0; i < 6; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}
static inline int np_mac_bcast(const uint8_t *a)
{
	for (unsigned i = 0; i < 6; i++)
		if (a[i] != 0xFF)
			return 0;
	return 1;
}

/* Internet checksum (RFC 1071) of len bytes, folded into `sum` (a running
 * 32-bit partial sum, e.g. of a pseudo header). Returns the complemented
 * 16-bit result: 0 when verifying data that includes a correct checksum. */
static inline uint16_t np_csum(const uint8_t *p, size_t len, uint64_t sum)
{
	size_t i = 0;
	for (; i + 1 < len; i += 2)
		sum += np_get16(p + i);
	if (i < len)
		sum += (uint32_t)p[i] << 8;
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Sum of the UDP/TCP pseudo header. */
static inline uint64_t np_pseudo(uint32_t src, uint32_t dst, unsigned proto, size_t len)
{
	return (uint64_t)(src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + len;
}

/* "A.B.C.D" at s (at most n bytes): 1 and *ip on success; *used = bytes read. */
static inline int np_parse_ip(const char *s, size_t n, uint32_t *ip, size_t *used)
{
	uint32_t r = 0;
	size_t i = 0;
	for (unsigned part = 0; part < 4; part++) {
		if (part) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
		unsigned v = 0, digits = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 4) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
			digits++;
		}
		if (digits == 0 || digits > 3 || v > 255)
			return 0;
		r = r << 8 | v;
	}
	*ip = r;
	if (used)
		*used = i;
	return 1;
}

/* May we talk to this address as a unicast peer? */
static inline int np_unicast_peer(const struct np_state *st, uint32_t a)
{
	if (a == 0 || a == 0xFFFFFFFFu || (a >> 28) == 0xE || (a >> 28) == 0xF || a == st->ip)
		return 0;
	if (st->mask != 0xFFFFFFFFu && st->mask != 0xFFFFFFFEu && (a & st->mask) == (st->ip & st->mask) &&
	    (a & ~st->mask) == ~st->mask)
		return 0; /* our subnet's broadcast address */
	return 1;
}

/* ---- ARP cache -------------------------------------------------------------------------- */

static inline const uint8_t *np_arp_lookup(const struct np_state *st, uint32_t ip)
{
	for (unsigned i = 0; i < NP_ARP_CACHE; i++)
		if (st->arp[i].valid && st->arp[i].ip == ip)
			return st->arp[i].mac;
	return NULL;
}

static inline void np_arp_learn(struct np_state *st, uint32_t ip, const uint8_t *mac)
{
	struct np_arp_entry *e = NULL;
	for (unsigned i = 0; i < NP_ARP_CACHE; i++)
		if (st->arp[i].valid && st->arp[i].ip == ip)
			e = &st->arp[i];
	if (!e) {
		e = &st->arp[st->arp_next % NP_ARP_CACHE];
		st->arp_next = (st->arp_next + 1) % NP_ARP_CACHE;
	}
	e->ip = ip;
	memcpy(e->mac, mac, 6);
	e->valid = 1;
}

/* ---- frame builders: out must hold NP_FRAME_MAX bytes ---------------------------------------- */

static inline size_t np_pad(uint8_t *out, size_t len)
{
	if (len < NP_ETH_MIN) {
		memset(out + len, 0, NP_ETH_MIN - len);
		len = NP_ETH_MIN;
	}
	return len;
}

static inline void np_eth(const struct np_state *st, uint8_t *out, const uint8_t *dst, unsigned type)
{
	memcpy(out, dst, 6);
	memcpy(out + 6, st->mac, 6);
	np_put16(out + 12, type);
}

/* An ARP packet; tha NULL means all zero (a request). */
static inline size_t np_build_arp(const struct np_state *st, uint8_t *out, unsigned op, const uint8_t *eth_dst,
				  const uint8_t *tha, uint32_t tpa)
{
	static const uint8_t zero[6];
	np_eth(st, out, eth_dst, NP_ETYPE_ARP);
	uint8_t *a = out + NP_ETH_HLEN;
	np_put16(a, 1);           /* Ethernet */
	np_put16(a + 2, NP_ETYPE_IP);
	a[4] = 6;
	a[5] = 4;
	np_put16(a + 6, op);
	memcpy(a + 8, st->mac, 6);
	np_put32(a + 14, st->ip);
	memcpy(a + 18, tha ? tha : zero, 6);
	np_put32(a + 24, tpa);
	return np_pad(out, NP_ETH_HLEN + NP_ARP_LEN);
}

static inline size_t np_build_arp_request(const struct np_state *st, uint8_t *out, uint32_t tpa)
{
	static const uint8_t bcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
	return np_build_arp(st, out, 1, bcast, NULL, tpa);
}

/* Ethernet + a 20-byte IPv4 header for payload_len bytes of proto to dst. */
static inline void np_ip_header(struct np_state *st, uint8_t *out, const uint8_t *eth_dst, uint32_t dst,
				unsigned proto, size_t payload_len)
{
	np_eth(st, out, eth_dst, NP_ETYPE_IP);
	uint8_t *ip = out + NP_ETH_HLEN;
	ip[0] = 0x45;
	ip[1] = 0;
	np_put16(ip + 2, (uint32_t)(NP_IP_HLEN + payload_len));
	np_put16(ip + 4, st->ip_id++);
	np_put16(ip + 6, 0);
	ip[8] = 64; /* TTL */
	ip[9] = (uint8_t)proto;
	np_put16(ip + 10, 0);
	np_put32(ip + 12, st->ip);
	np_put32(ip + 16, dst);
	np_put16(ip + 10, np_csum(ip, NP_IP_HLEN, 0));
}

static inline size_t np_build_echo_request(struct np_state *st, uint8_t *out, const uint8_t *eth_dst, uint32_t dst,
					   uint16_t seq)
{
	const size_t icmp_len = 8 + NP_PING_PAYLOAD;
	np_ip_header(st, out, eth_dst, dst, NP_PROTO_ICMP, icmp_len);
	uint8_t *ic = out + NP_ETH_HLEN + NP_IP_HLEN;
	ic[0] = 8;
	ic[1] = 0;
	np_put16(ic + 2, 0);
	np_put16(ic + 4, st->ping_id);
	np_put16(ic + 6, seq);
	for (unsigned i = 0; i < NP_PING_PAYLOAD; i++)
		ic[8 + i] = (uint8_t)(0x10 + i);
	np_put16(ic + 2, np_csum(ic, icmp_len, 0));
	return np_pad(out, NP_ETH_HLEN + NP_IP_HLEN + icmp_len);
}

/* ---- receive ------------------------------------------------------------------------------- */

static inline size_t np_handle_arp(struct np_state *st, const uint8_t *f, size_t len, uint8_t *out)
{
	if (len < NP_ETH_HLEN + NP_ARP_LEN)
		return 0;
	const uint8_t *a = f + NP_ETH_HLEN;
	if (np_get16(a) != 1 || np_get16(a + 2) != NP_ETYPE_IP || a[4] != 6 || a[5] != 4)
		return 0;
	unsigned op = np_get16(a + 6);
	const uint8_t *sha = a + 8;
	uint32_t spa = np_get32(a + 14), tpa = np_get32(a + 24);
	if (tpa != st->ip || (sha[0] & 1) || (op != 1 && op != 2))
		return 0;
	if (np_unicast_peer(st, spa))
		np_arp_learn(st, spa, sha);
	if (op != 1)
		return 0;
	return np_build_arp(st, out, 2, sha, sha, spa);
}

static inline size_t np_handle_icmp(struct np_state *st, const uint8_t *f, uint32_t src, const uint8_t *pl,
				    size_t plen, uint8_t *out, size_t cap)
{
	if (plen < 8 || np_csum(pl, plen, 0) != 0 || pl[1] != 0)
		return 0;
	if (pl[0] == 0) { /* echo reply: maybe one of ours */
		if (np_get16(pl + 4) == st->ping_id) {
			st->echo_seen = 1;
			st->echo_from = src;
			st->echo_seq = np_get16(pl + 6);
		}
		return 0;
	}
	if (pl[0] != 8)
		return 0;
	size_t n = NP_ETH_HLEN + NP_IP_HLEN + plen;
	if (n > cap || n > NP_FRAME_MAX)
		return 0;
	np_ip_header(st, out, f + 6, src, NP_PROTO_ICMP, plen);
	uint8_t *ic = out + NP_ETH_HLEN + NP_IP_HLEN;
	memcpy(ic, pl, plen);
	ic[0] = 0;
	np_put16(ic + 2, 0);
	np_put16(ic + 2, np_csum(ic, plen, 0));
	return np_pad(out, n);
}

static inline size_t np_handle_udp(struct np_state *st, const uint8_t *f, uint32_t src, uint32_t dst,
				   const uint8_t *pl, size_t plen, uint8_t *out, size_t cap)
{
	if (plen < 8)
		return 0;
	unsigned sport = np_get16(pl), dport = np_get16(pl + 2);
	size_t ulen = np_get16(pl + 4);
	if (ulen < 8 || ulen > plen || !st->udp_port || dport != st->udp_port || sport == 0)
		return 0;
	if (np_get16(pl + 6) != 0 && np_csum(pl, ulen, np_pseudo(src, dst, NP_PROTO_UDP, ulen)) != 0)
		return 0;
	size_t n = NP_ETH_HLEN + NP_IP_HLEN + ulen;
	if (n > cap || n > NP_FRAME_MAX)
		return 0;
	np_ip_header(st, out, f + 6, src, NP_PROTO_UDP, ulen);
	uint8_t *u = out + NP_ETH_HLEN + NP_IP_HLEN;
	memcpy(u, pl, ulen);
	np_put16(u, dport);
	np_put16(u + 2, sport);
	np_put16(u + 6, 0);
	uint16_t c = np_csum(u, ulen, np_pseudo(st->ip, src, NP_PROTO_UDP, ulen));
	np_put16(u + 6, c ? c : 0xFFFF);
	return np_pad(out, n);
}

static inline size_t np_handle_ip(struct np_state *st, const uint8_t *f, size_t len, uint8_t *out, size_t cap)
{
	if (len < NP_ETH_HLEN + NP_IP_HLEN)
		return 0;
	const uint8_t *ip = f + NP_ETH_HLEN;
	size_t avail = len - NP_ETH_HLEN;
	size_t ihl = (size_t)(ip[0] & 0xF) * 4;
	size_t tot = np_get16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < NP_IP_HLEN || tot < ihl || tot > avail)
		return 0;
	if (np_csum(ip, ihl, 0) != 0)
		return 0;
	if (np_get16(ip + 6) & 0x3FFF) /* a fragment (MF or an offset): not for us */
		return 0;
	uint32_t src = np_get32(ip + 12), dst = np_get32(ip + 16);
	if (dst != st->ip || !np_unicast_peer(st, src))
		return 0;
	const uint8_t *pl = ip + ihl;
	size_t plen = tot - ihl;
	if (ip[9] == NP_PROTO_ICMP)
		return np_handle_icmp(st, f, src, pl, plen, out, cap);
	if (ip[9] == NP_PROTO_UDP)
		return np_handle_udp(st, f, src, dst, pl, plen, out, cap);
	return 0;
}

/* Handle one received Ethernet frame (f, len). Returns the length of the reply
 * frame written to out (at most cap bytes), 0 for none. Sets st->echo_seen
 * when the frame was an echo reply to our ping id. */
static inline size_t np_handle(struct np_state *st, const uint8_t *f, size_t len, uint8_t *out, size_t cap)
{
	st->echo_seen = 0;
	if (len < NP_ETH_HLEN || cap < NP_ETH_MIN || cap < NP_ETH_HLEN + NP_ARP_LEN)
		return 0;
	if (!np_mac_eq(f, st->mac) && !np_mac_bcast(f))
		return 0;
	if (f[6] & 1) /* multicast source: bogus */
		return 0;
	unsigned type = np_get16(f + 12);
	if (type == NP_ETYPE_ARP)
		return np_handle_arp(st, f, len, out);
	if (type == NP_ETYPE_IP)
		return np_handle_ip(st, f, len, out, cap);
	return 0;
}

#endif
