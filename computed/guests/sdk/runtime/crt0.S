/*
 * crt0: the image entry point, and the few paths that must be exact assembly.
 *
 * Entry state (computed_guest.h): 64-bit ring 0, interrupts off, RDI = this
 * vCPU's boot info, RSP = the top of this vCPU's VMM-provided stack.
 */
	.section .text.entry, "ax"
	.globl _start
	.type _start, @function
_start:
	cld
	andq $-16, %rsp
	call rt_start		/* RDI is passed through; never returns */
1:	cli
	hlt
	jmp 1b
	.size _start, . - _start

	.text
/*
 * The system call gate: `int3` from ring 3 (vector 3 with DPL 3; also
 * installed at vector 0x80), RAX = call number (rt.h RT_SYS_*). An interrupt
 * gate, so IF=0 on entry; the IRETQ restores the caller's RFLAGS.
 *
 * Why int3: on a PVM host (KVM over a paravirtual hypervisor) `int $n` from
 * ring 3 is not virtualised and raises #UD, and IOPL=3 is not honoured, so
 * ring-3 code can neither use an `int $0x80` gate nor do port I/O itself.
 * Exceptions do reach the guest's IDT, and #BP from INT3 is a trap (RIP
 * after the instruction), which makes it a one-byte system call.
 *
 * Ring 0 may be emulated instruction by instruction, so every path is a
 * handful of instructions.
 */
	.globl rt_syscall_isr
	.type rt_syscall_isr, @function
rt_syscall_isr:
	test %eax, %eax			/* RT_SYS_HALT: wait for the next interrupt */
	jnz 1f
	sti				/* STI's shadow makes sti;hlt atomic: a pending */
	hlt				/* interrupt wakes the HLT, it does not slip in */
	iretq				/* before it. It nests here, then we return. */
1:	cmp $1, %eax			/* RT_SYS_WRITE: RSI = buf, RCX = len -> console */
	jne 2f
	push %rdi			/* rt_write(buf, len) in ring 0: one exit per */
	push %r8			/* string through the console port where the VMM */
	push %r9			/* has it, not one per byte. Kept: what the caller */
	push %r10			/* does not declare clobbered (RAX, RSI, RCX, RDX */
	push %r11			/* are). The CPU aligned the stack before its */
	cld				/* 5-word frame: after 5 pushes the call is aligned */
	mov %rsi, %rdi
	mov %rcx, %rsi
	call rt_write
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	iretq
2:	cmp $2, %eax			/* RT_SYS_OUT: EDX = port, ECX = size, ESI = value */
	jne 3f
	mov %esi, %eax
	cmp $1, %ecx
	jne 21f
	outb %al, %dx
	iretq
21:	cmp $2, %ecx
	jne 22f
	outw %ax, %dx
	iretq
22:	outl %eax, %dx
	iretq
3:	cmp $3, %eax			/* RT_SYS_IN: EDX = port, ECX = size -> EAX */
	jne 4f
	xor %eax, %eax
	cmp $1, %ecx
	jne 31f
	inb %dx, %al
	iretq
31:	cmp $2, %ecx
	jne 32f
	inw %dx, %ax
	iretq
32:	inl %dx, %eax
	iretq
4:	cmp $4, %eax			/* RT_SYS_OUTS: EDX = port, RSI = buf, RCX = count, R8D = size */
	jne 5f
	cmp $1, %r8d
	jne 41f
	rep outsb
	iretq
41:	cmp $2, %r8d
	jne 42f
	rep outsw
	iretq
42:	rep outsl
	iretq
5:	cmp $5, %eax			/* RT_SYS_INS: EDX = port, RDI = buf, RCX = count, R8D = size */
	jne 6f
	cmp $1, %r8d
	jne 51f
	rep insb
	iretq
51:	cmp $2, %r8d
	jne 52f
	rep insw
	iretq
52:	rep insl
	iretq
6:	mov $-1, %rax			/* unknown call */
	iretq
	.size rt_syscall_isr, . - rt_syscall_isr

	.section .note.GNU-stack, "", @progbits
