/*
 * net: a minimal virtio-net (virtio-mmio, virtio 1.x) driver with ARP, IPv4,
 * ICMP echo and UDP echo.
 *
 * Command line:
 *   ip=A.B.C.D/NN   our address (required; else exit code 2)
 *   gw=A.B.C.D      default gateway (optional)
 *   ping=A.B.C.D,N  ping that address N times, one second apart (optional)
 *   udp=PORT        UDP echo port (default 7; 0 turns it off)
 *
 * Device set-up runs in ring 0 (it is a few hundred instructions); the packet
 * loop runs in ring 3 where it is native, and sleeps with rt_sys_halt() until
 * the next interrupt (the NIC's, or the 100 Hz PIT tick that paces pings).
 * The NIC's interrupt handler only acknowledges the device and counts.
 */
#include <computed_rt.h>
#include "net_proto.h"

#define HZ 100u
#define QSIZE 64u
#define BUF_SIZE 2048u
#define VNET_HDR_LEN 12u /* struct virtio_net_hdr_v1 */
#define RXQ 0u
#define TXQ 1u
#define PING_SLOTS 64u
#define PING_ARP_TRIES 10u

/* virtio-mmio registers (layout version 2) */
#define VIRTIO_MMIO_MAGIC 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MAGIC 0x74726976u
#define VIRTIO_ID_NET 1u
#define VIRTIO_STATUS_ACKNOWLEDGE 1u
#define VIRTIO_STATUS_DRIVER 2u
#define VIRTIO_STATUS_DRIVER_OK 4u
#define VIRTIO_STATUS_FEATURES_OK 8u
#define VIRTIO_STATUS_FAILED 128u
#define VIRTIO_NET_F_MAC 5u /* in feature word 0 */
#define VIRTIO_F_VERSION_1 0u /* bit 32: feature word 1, bit 0 */
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_USED_F_NO_NOTIFY 1u

struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
struct vq_avail {
	uint16_t flags, idx, ring[QSIZE], used_event;
};
struct vq_used_elem {
	uint32_t id, len;
};
struct vq_used {
	uint16_t flags, idx;
	struct vq_used_elem ring[QSIZE];
	uint16_t avail_event;
};

/* One split virtqueue; each ring in its own page. */
struct vq {
	struct vq_desc desc[QSIZE] __attribute__((aligned(4096)));
	struct vq_avail avail __attribute__((aligned(4096)));
	struct vq_used used __attribute__((aligned(4096)));
	uint16_t size;      /* entries in use (power of two, <= QSIZE) */
	uint16_t avail_idx; /* our copy of avail.idx */
	uint16_t used_last; /* next used entry to consume */
	uint16_t unpublished;
};

static struct vq rxq, txq;
static uint8_t rxbuf[QSIZE][BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t txbuf[QSIZE][BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t rx_posted[QSIZE];
static uint8_t tx_busy[QSIZE];
static uint16_t tx_free[QSIZE];
static unsigned tx_nfree;

static uintptr_t mmio;
static unsigned nic_irq;
static volatile uint64_t ticks, nic_irqs;
static uint64_t tsc_khz;
static struct np_state st;
static uint8_t user_stack[16384] __attribute__((aligned(16)));

/* ping=IP,COUNT */
enum { PING_OFF, PING_ARP, PING_SEND, PING_WAIT, PING_DONE };
static unsigned ping_state;
static uint32_t ping_target, ping_nh;
static uint8_t ping_nh_mac[6];
static uint64_t ping_count, ping_sent, ping_received, ping_next, ping_arp_tries;
static struct {
	uint64_t seq, tsc, tick;
	uint8_t answered;
} ping_slot[PING_SLOTS];

#define barrier() __asm__ volatile("" ::: "memory")
#define mfence() __asm__ volatile("mfence" ::: "memory")

static inline uint32_t mmio_read(unsigned off) { return *(volatile uint32_t *)(mmio + off); }
static inline void mmio_write(unsigned off, uint32_t v) { *(volatile uint32_t *)(mmio + off) = v; }

/* ---- interrupts (ring 0: a handful of instructions each) ---------------------------- */

RT_ISR static void timer_isr(struct rt_iframe *f)
{
	(void)f;
	ticks++;
	rt_eoi_master();
}

RT_ISR static void nic_isr(struct rt_iframe *f)
{
	(void)f;
	mmio_write(VIRTIO_MMIO_INTERRUPT_ACK, mmio_read(VIRTIO_MMIO_INTERRUPT_STATUS));
	nic_irqs++;
	rt_eoi(nic_irq);
}

/* ---- printing -------------------------------------------------------------------------- */

#define IPF "%u.%u.%u.%u"
#define IPA(a) (unsigned)((a) >> 24), (unsigned)((a) >> 16 & 0xFF), (unsigned)((a) >> 8 & 0xFF), (unsigned)((a) & 0xFF)

static unsigned prefix_len(uint32_t mask)
{
	unsigned n = 0;
	while (n < 32 && (mask & (0x80000000u >> n)))
		n++;
	return n;
}

/* ---- command line ------------------------------------------------------------------------ */

static RT_NORETURN void usage(const char *what)
{
	rt_printf("net: %s (want ip=A.B.C.D/NN [gw=A.B.C.D] [ping=A.B.C.D,COUNT] [udp=PORT])\n", what);
	rt_debug_exit(2);
}

static void parse_cmdline(void)
{
	size_t n, used;
	const char *v = rt_cmdline_get("ip", &n);
	if (!v)
		usage("missing ip=");
	uint32_t ip;
	if (!np_parse_ip(v, n, &ip, &used) || used >= n || v[used] != '/' || ip == 0 || (ip >> 28) >= 0xE)
		usage("bad ip=");
	unsigned plen = 0, digits = 0;
	for (size_t i = used + 1; i < n; i++) {
		if (v[i] < '0' || v[i] > '9' || ++digits > 2)
			usage("bad ip= prefix length");
		plen = plen * 10 + (unsigned)(v[i] - '0');
	}
	if (!digits || plen > 32)
		usage("bad ip= prefix length");
	st.ip = ip;
	st.mask = plen ? 0xFFFFFFFFu << (32 - plen) : 0;

	if ((v = rt_cmdline_get("gw", &n)) != NULL) {
		if (!np_parse_ip(v, n, &st.gw, &used) || used != n || !np_unicast_peer(&st, st.gw))
			usage("bad gw=");
	}

	uint64_t port = rt_cmdline_uint("udp", 7);
	if (port > 0xFFFF)
		usage("bad udp=");
	st.udp_port = (uint16_t)port;

	if ((v = rt_cmdline_get("ping", &n)) != NULL) {
		if (!np_parse_ip(v, n, &ping_target, &used) || !np_unicast_peer(&st, ping_target))
			usage("bad ping=");
		ping_count = 0;
		if (used == n) {
			ping_count = 3;
		} else {
			if (v[used] != ',' || used + 1 == n)
				usage("bad ping= count");
			for (size_t i = used + 1; i < n; i++) {
				if (v[i] < '0' || v[i] > '9' || ping_count > 1000000)
					usage("bad ping= count");
				ping_count = ping_count * 10 + (uint64_t)(v[i] - '0');
			}
		}
		if (ping_count > 0) {
			if ((ping_target & st.mask) == (st.ip & st.mask))
				ping_nh = ping_target;
			else if (st.gw)
				ping_nh = st.gw;
			else
				usage("ping= target is off-link and there is no gw=");
			ping_state = PING_ARP;
		}
	}
}

/* ---- virtio ------------------------------------------------------------------------------- */

static RT_NORETURN void dev_fail(const char *what)
{
	mmio_write(VIRTIO_MMIO_STATUS, mmio_read(VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_FAILED);
	rt_printf("net: virtio-net at %lx: %s\n", (uint64_t)mmio, what);
	rt_debug_exit(4);
}

static void queue_setup(unsigned index, struct vq *q)
{
	mmio_write(VIRTIO_MMIO_QUEUE_SEL, index);
	if (mmio_read(VIRTIO_MMIO_QUEUE_READY))
		dev_fail("queue already live");
	uint32_t max = mmio_read(VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (max == 0)
		dev_fail("queue missing");
	unsigned size = QSIZE;
	while (size > max)
		size >>= 1;
	q->size = (uint16_t)size;
	uint64_t d = (uintptr_t)q->desc, a = (uintptr_t)&q->avail, u = (uintptr_t)&q->used;
	mmio_write(VIRTIO_MMIO_QUEUE_NUM, size);
	mmio_write(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)d);
	mmio_write(VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(d >> 32));
	mmio_write(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)a);
	mmio_write(VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(a >> 32));
	mmio_write(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)u);
	mmio_write(VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(u >> 32));
	mmio_write(VIRTIO_MMIO_QUEUE_READY, 1);
}

/* Put RX buffer id on the avail ring (published later by vq_publish). */
static void rx_post(uint16_t id)
{
	struct vq_desc *d = &rxq.desc[id];
	d->addr = (uintptr_t)rxbuf[id];
	d->len = BUF_SIZE;
	d->flags = VIRTQ_DESC_F_WRITE;
	d->next = 0;
	rxq.avail.ring[rxq.avail_idx & (rxq.size - 1)] = id;
	rxq.avail_idx++;
	rxq.unpublished++;
	rx_posted[id] = 1;
}

/* Make new avail entries visible and notify the device unless it said not to. */
static void vq_publish(unsigned index, struct vq *q)
{
	if (!q->unpublished)
		return;
	q->unpublished = 0;
	barrier(); /* descriptors and ring entries before the index (x86: stores stay ordered) */
	*(volatile uint16_t *)&q->avail.idx = q->avail_idx;
	mfence(); /* the index store before the flags load */
	if (!(*(volatile uint16_t *)&q->used.flags & VIRTQ_USED_F_NO_NOTIFY))
		mmio_write(VIRTIO_MMIO_QUEUE_NOTIFY, index);
}

static void nic_init(const struct computed_nic *nic)
{
	mmio = (uintptr_t)nic->mmio_gpa;
	if (mmio_read(VIRTIO_MMIO_MAGIC) != VIRTIO_MAGIC || mmio_read(VIRTIO_MMIO_VERSION) != 2 ||
	    mmio_read(VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_NET) {
		rt_printf("net: no virtio-net (mmio version 2) at %lx\n", (uint64_t)mmio);
		rt_debug_exit(4);
	}
	mmio_write(VIRTIO_MMIO_STATUS, 0); /* reset */
	if (mmio_read(VIRTIO_MMIO_STATUS) != 0)
		dev_fail("reset did not complete");
	mmio_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	mmio_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);

	mmio_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	uint32_t f0 = mmio_read(VIRTIO_MMIO_DEVICE_FEATURES);
	mmio_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	uint32_t f1 = mmio_read(VIRTIO_MMIO_DEVICE_FEATURES);
	if (!(f1 & 1u << VIRTIO_F_VERSION_1))
		dev_fail("VIRTIO_F_VERSION_1 not offered");
	mmio_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	mmio_write(VIRTIO_MMIO_DRIVER_FEATURES, f0 & 1u << VIRTIO_NET_F_MAC);
	mmio_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	mmio_write(VIRTIO_MMIO_DRIVER_FEATURES, 1u << VIRTIO_F_VERSION_1);
	const uint32_t s = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	mmio_write(VIRTIO_MMIO_STATUS, s);
	if (!(mmio_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
		dev_fail("features not accepted");

	/* Our MAC: the device's config space if it offers one, else the boot info's. */
	memcpy(st.mac, nic->mac, 6);
	if (f0 & 1u << VIRTIO_NET_F_MAC) {
		for (unsigned tries = 0; tries < 4; tries++) {
			uint32_t gen = mmio_read(VIRTIO_MMIO_CONFIG_GENERATION);
			for (unsigned i = 0; i < 6; i++)
				st.mac[i] = *(volatile uint8_t *)(mmio + VIRTIO_MMIO_CONFIG + i);
			if (mmio_read(VIRTIO_MMIO_CONFIG_GENERATION) == gen)
				break;
		}
	}

	queue_setup(RXQ, &rxq);
	queue_setup(TXQ, &txq);
	for (uint16_t i = 0; i < rxq.size; i++)
		rx_post(i);
	for (uint16_t i = 0; i < txq.size; i++)
		tx_free[tx_nfree++] = i;
	rxq.unpublished = 0;
	barrier();
	*(volatile uint16_t *)&rxq.avail.idx = rxq.avail_idx;
	mmio_write(VIRTIO_MMIO_STATUS, s | VIRTIO_STATUS_DRIVER_OK);
	if (mmio_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FAILED)
		dev_fail("device failed");
	mmio_write(VIRTIO_MMIO_QUEUE_NOTIFY, RXQ);
}

/* ---- hostile=KIND: a malformed transmit ring, for testing the VMM's checks --------------------- */

#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTIO_STATUS_NEEDS_RESET 64u

/* Offer the device one transmit chain broken as KIND says (loop: a descriptor that
 * chains to itself; oob: an address past RAM; huge: a 4 GiB length; head: a head index
 * past the table; indirect: an indirect descriptor), wait for the device to say
 * DEVICE_NEEDS_RESET, report it, then reset and set the device up again. */
static int word_is(const char *v, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n && word[i]; i++)
		if (v[i] != word[i])
			return 0;
	return i == n && !word[i];
}

static void hostile_ring(const struct computed_nic *nic, const char *kind, size_t n)
{
	struct vq_desc *d = &txq.desc[0];
	uint16_t head = 0;
	d->addr = (uintptr_t)txbuf[0];
	d->len = 64;
	d->flags = 0;
	d->next = 0;
	if (word_is(kind, n, "loop"))
		d->flags = VIRTQ_DESC_F_NEXT;
	else if (word_is(kind, n, "oob"))
		d->addr = 0xFFFFFFFF000ull;
	else if (word_is(kind, n, "huge"))
		d->len = 0xFFFFFFFFu;
	else if (word_is(kind, n, "head"))
		head = 4000;
	else if (word_is(kind, n, "indirect"))
		d->flags = VIRTQ_DESC_F_INDIRECT;
	else
		usage("hostile= is loop, oob, huge, head or indirect");
	txq.avail.ring[txq.avail_idx & (txq.size - 1)] = head;
	txq.avail_idx++;
	barrier();
	*(volatile uint16_t *)&txq.avail.idx = txq.avail_idx;
	mmio_write(VIRTIO_MMIO_QUEUE_NOTIFY, TXQ);
	uint32_t status = 0;
	for (unsigned i = 0; i < 100000 && !(status & VIRTIO_STATUS_NEEDS_RESET); i++) {
		status = mmio_read(VIRTIO_MMIO_STATUS);
		rt_pause();
	}
	char name[16];
	size_t len = n < sizeof(name) - 1 ? n : sizeof(name) - 1;
	memcpy(name, kind, len);
	name[len] = 0;
	rt_printf("net: hostile ring %s: device status %x%s\n", name, status,
		  status & VIRTIO_STATUS_NEEDS_RESET ? " (needs reset)" : "");
	memset(&rxq, 0, sizeof(rxq));
	memset(&txq, 0, sizeof(txq));
	memset(rx_posted, 0, sizeof(rx_posted));
	tx_nfree = 0;
	nic_init(nic); /* reset (status 0) and set up again: the device must work after it */
}

/* ---- transmit ------------------------------------------------------------------------------ */

static void tx_reclaim(void)
{
	uint16_t end = *(volatile uint16_t *)&txq.used.idx;
	barrier(); /* the index before the entries */
	while (txq.used_last != end) {
		uint32_t id = txq.used.ring[txq.used_last & (txq.size - 1)].id;
		txq.used_last++;
		if (id < txq.size && tx_busy[id]) {
			tx_busy[id] = 0;
			tx_free[tx_nfree++] = (uint16_t)id;
		}
	}
}

/* A free TX buffer's frame area (after the virtio-net header); -1 if none. */
static int tx_get(uint8_t **frame)
{
	if (!tx_nfree)
		tx_reclaim();
	if (!tx_nfree)
		return -1;
	uint16_t id = tx_free[tx_nfree - 1];
	*frame = txbuf[id] + VNET_HDR_LEN;
	return id;
}

/* Queue the frame built in tx_get's buffer id (published by vq_publish). */
static void tx_put(int id, size_t len)
{
	if (id < 0 || len == 0 || len > BUF_SIZE - VNET_HDR_LEN)
		return;
	tx_nfree--; /* id is tx_free's top: tx_get took it from there */
	tx_busy[id] = 1;
	memset(txbuf[id], 0, VNET_HDR_LEN);
	struct vq_desc *d = &txq.desc[id];
	d->addr = (uintptr_t)txbuf[id];
	d->len = (uint32_t)(VNET_HDR_LEN + len);
	d->flags = 0;
	d->next = 0;
	txq.avail.ring[txq.avail_idx & (txq.size - 1)] = (uint16_t)id;
	txq.avail_idx++;
	txq.unpublished++;
}

/* ---- ping ---------------------------------------------------------------------------------- */

static void ping_summary(void)
{
	rt_printf("net: ping " IPF ": %lu sent, %lu received\n", IPA(ping_target), ping_sent, ping_received);
	ping_state = PING_DONE;
}

static void ping_reply(uint32_t from, uint16_t seq)
{
	if ((ping_state != PING_SEND && ping_state != PING_WAIT) || from != ping_target || seq == 0 ||
	    seq > ping_sent)
		return;
	uint64_t now_tsc = rt_rdtsc(), now_tick = ticks;
	unsigned slot = seq % PING_SLOTS;
	if (ping_slot[slot].seq != seq || ping_slot[slot].answered)
		return;
	ping_slot[slot].answered = 1;
	ping_received++;
	uint64_t us;
	if (tsc_khz)
		us = (now_tsc - ping_slot[slot].tsc) * 1000u / tsc_khz;
	else
		us = (now_tick - ping_slot[slot].tick) * (1000000u / HZ);
	rt_printf("net: reply from " IPF " seq=%u time=%lu.%03lu ms\n", IPA(from), seq, us / 1000u, us % 1000u);
}

static void ping_step(void)
{
	uint64_t now = ticks;
	uint8_t *frame;
	int id;
	switch (ping_state) {
	case PING_ARP: {
		const uint8_t *mac = np_arp_lookup(&st, ping_nh);
		if (mac) {
			memcpy(ping_nh_mac, mac, 6);
			ping_state = PING_SEND;
			ping_next = now;
			break; /* sends on the next pass */
		}
		if (now < ping_next)
			break;
		if (ping_arp_tries >= PING_ARP_TRIES) {
			rt_printf("net: ping " IPF ": no ARP reply from " IPF "\n", IPA(ping_target), IPA(ping_nh));
			ping_summary();
			break;
		}
		if ((id = tx_get(&frame)) >= 0) {
			tx_put(id, np_build_arp_request(&st, frame, ping_nh));
			ping_arp_tries++;
			ping_next = now + HZ;
		}
		break;
	}
	case PING_SEND:
		if (now < ping_next)
			break;
		if ((id = tx_get(&frame)) < 0)
			break;
		{
			uint16_t seq = (uint16_t)(ping_sent + 1);
			unsigned slot = seq % PING_SLOTS;
			ping_slot[slot].seq = seq;
			ping_slot[slot].answered = 0;
			ping_slot[slot].tick = now;
			size_t len = np_build_echo_request(&st, frame, ping_nh_mac, ping_target, seq);
			ping_slot[slot].tsc = rt_rdtsc();
			tx_put(id, len);
		}
		ping_sent++;
		ping_next = now + HZ;
		if (ping_sent >= ping_count)
			ping_state = PING_WAIT; /* ping_next: the last reply's deadline */
		break;
	case PING_WAIT:
		if (ping_received >= ping_sent || now >= ping_next)
			ping_summary();
		break;
	default:
		break;
	}
}

/* ---- the packet loop (ring 3) ------------------------------------------------------------- */

/* Handle every received frame; returns how many. */
static unsigned rx_drain(void)
{
	unsigned handled = 0;
	uint16_t end = *(volatile uint16_t *)&rxq.used.idx;
	barrier(); /* the index before the entries */
	while (rxq.used_last != end) {
		struct vq_used_elem e = rxq.used.ring[rxq.used_last & (rxq.size - 1)];
		rxq.used_last++;
		handled++;
		if (e.id >= rxq.size || !rx_posted[e.id])
			continue; /* a device bug; nothing we can give back */
		rx_posted[e.id] = 0;
		if (e.len > VNET_HDR_LEN && e.len <= BUF_SIZE) {
			uint8_t *out;
			int id = tx_get(&out);
			if (id >= 0) {
				size_t n = np_handle(&st, rxbuf[e.id] + VNET_HDR_LEN, e.len - VNET_HDR_LEN, out,
						     BUF_SIZE - VNET_HDR_LEN);
				tx_put(id, n);
			} else { /* no TX buffer: still look at it (ARP learning, ping replies) */
				static uint8_t scratch[BUF_SIZE];
				np_handle(&st, rxbuf[e.id] + VNET_HDR_LEN, e.len - VNET_HDR_LEN, scratch,
					  sizeof(scratch));
			}
			if (st.echo_seen)
				ping_reply(st.echo_from, st.echo_seq);
		}
		rx_post((uint16_t)e.id);
	}
	return handled;
}

static void net_loop(void)
{
	for (;;) {
		if (rt_power_button_pressed()) {
			rt_puts("net: power button, shutting down\n");
			rt_poweroff();
		}
		unsigned n = rx_drain();
		vq_publish(RXQ, &rxq);
		tx_reclaim();
		ping_step();
		vq_publish(TXQ, &txq);
		if (n)
			continue;
		/* Sleep until the next interrupt. A NIC interrupt landing between this
		 * check and the halt costs at most one PIT period (10 ms). */
		if (*(volatile uint16_t *)&rxq.used.idx != rxq.used_last)
			continue;
		rt_sys_halt();
	}
}

void guest_main(const struct computed_boot_info *boot)
{
	parse_cmdline();
	if (boot->nic_count == 0) {
		rt_puts("net: no network interface\n");
		rt_debug_exit(3);
	}
	const struct computed_nic *nic = &boot->nics[0];
	if (nic->irq > 15 || nic->irq == 0 || nic->irq == 2 || nic->irq == COMPUTED_IRQ_EVENTS) {
		rt_printf("net: unusable NIC irq %u\n", nic->irq);
		rt_debug_exit(4);
	}
	nic_irq = nic->irq;
	st.ping_id = 0x4E54; /* "NT" */
	tsc_khz = boot->tsc_khz;

	rt_cpu_init(boot);
	rt_idt_init();
	rt_pic_init();
	rt_irq_set(0, timer_isr);
	rt_irq_set(nic_irq, nic_isr);
	rt_power_button_init();
	nic_init(nic);
	size_t hostile_len;
	const char *hostile = rt_cmdline_get("hostile", &hostile_len);
	if (hostile)
		hostile_ring(nic, hostile, hostile_len);
	rt_pit_hz(HZ);
	rt_irq_unmask(0);
	rt_irq_unmask(nic_irq);

	if (st.gw)
		rt_printf("net: up mac=%02x:%02x:%02x:%02x:%02x:%02x ip=" IPF "/%u gw=" IPF " udp=%u\n", st.mac[0],
			  st.mac[1], st.mac[2], st.mac[3], st.mac[4], st.mac[5], IPA(st.ip), prefix_len(st.mask),
			  IPA(st.gw), st.udp_port);
	else
		rt_printf("net: up mac=%02x:%02x:%02x:%02x:%02x:%02x ip=" IPF "/%u gw=none udp=%u\n", st.mac[0],
			  st.mac[1], st.mac[2], st.mac[3], st.mac[4], st.mac[5], IPA(st.ip), prefix_len(st.mask),
			  st.udp_port);
	rt_enter_user(net_loop, user_stack + sizeof(user_stack));
}
