# karn's in-guest fast-syscall entry (issue 14, docs/design/fast-syscalls.md section 4).
# Reference source of the bytes in stubs.py: tests/test_fast_syscalls.py assembles it with
# `as` and compares. GS base = this vCPU's slot (karn/abi/fastcall.py has the layout).
# Entered by `jmp` from a per-site stub with rax = nr, rcx = the return address; it
# writes nothing below rsp (flags are kept with lahf/seto), so the red zone is safe.
        .set S_STATE,0; .set S_FLAGS,4; .set S_NR,8; .set S_A0,16; .set S_A1,24
        .set S_A2,32; .set S_A3,40; .set S_A4,48; .set S_A5,56; .set S_RET,64
        .set S_RES,72; .set S_ALIVE,80; .set S_BUDGET,88; .set S_USER_LO,96
        .set S_USER_HI,104; .set S_WADDR,112; .set S_WBITSET,120; .set S_INGUEST,124
        .set S_FASTMAP,128; .set S_SPIN,192; .set S_BLOCKED,200; .set S_SLOT0,208
        .set S_NSLOTS,216; .set S_KICKED,220; .set S_GCALLS,224
        .set S_NBOUND,232; .set S_RHEAD,240; .set S_RCALLS,248
        .set S_MASK,256; .set S_PENDING,264; .set S_MCALLS,272; .set S_MASKON,280
        .set S_SPIN_SHARED,288
        .set SET_ROBUST_LIST,273; .set ROBUST_LIST_HEAD_SIZE,24; .set RT_SIGPROCMASK,14
        .set UNBLOCKABLE,0x40100
        .set FUTEX,202; .set FUTEX_CMD_MASK,~0x180; .set FUTEX_WAIT_BITSET,9
        .set FUTEX_PRIVATE,0x80
        .set FUTEX_WAKE,1; .set FUTEX_WAKE_BITSET,10; .set SLOT_SIZE,512
        .set IDLE,0; .set REQ,1; .set TAKEN,2; .set DONE,3; .set DONE_WORK,4; .set REDO,5
        .set WITHDRAWN,6; .set WAITS,7; .set SPINWAIT,8; .set WOKEN,9; .set SPUN,10
        .set SYSCALL_PORT,0x10; .set WORK_PORT,0x12
        .macro  restore_user_state      # rdx and the flags as at the site
        movq    %gs:S_A2, %rdx
        movzbl  %gs:S_FLAGS+1, %r11d    # r11 = rflags image, as `syscall` leaves it
        movzbl  %gs:S_FLAGS, %eax
        shll    $11, %eax
        orl     %eax, %r11d
        orl     $0x200, %r11d
        movw    %gs:S_FLAGS, %ax
        addb    $0x7f, %al              # OF back
        sahf                            # SF ZF AF PF CF back
        .endm
        .text
entry:
        movq    %rax, %gs:S_NR
        movq    %rdi, %gs:S_A0
        movq    %rsi, %gs:S_A1
        movq    %rdx, %gs:S_A2
        movq    %r10, %gs:S_A3
        movq    %r8, %gs:S_A4
        movq    %r9, %gs:S_A5
        movq    %rcx, %gs:S_RET
        lahf                            # ah = SF ZF AF PF CF (rflags bits 0-7)
        seto    %al                     # al = OF
        movw    %ax, %gs:S_FLAGS
saved:                                  # the user's flags and rdx are in the slot
        movq    %gs:S_NR, %rax
        cmpq    $511, %rax
        ja      slow
        btq     %rax, %gs:S_FASTMAP     # calls the server may take
        jnc     slow
        cmpl    $FUTEX, %eax
        je      futex
        cmpl    $RT_SIGPROCMASK, %eax
        je      sigmask
        cmpl    $SET_ROBUST_LIST, %eax  # set_robust_list: answered here (no observer:
        jne     ask                     # S_INGUEST); the monitor reads the head from the
        cmpl    $0, %gs:S_INGUEST       # slot when it needs it (a thread's end,
        je      ask                     # get_robust_list, execve, another
        cmpq    $ROBUST_LIST_HEAD_SIZE, %rsi # set_robust_list)
        jne     ask                     # EINVAL: the server's answer
        movq    $0, %gs:S_RES
        movq    %rdi, %gs:S_RHEAD
        incq    %gs:S_GCALLS            # answered in the guest (a kick before it: made
        incq    %gs:S_RCALLS            # again, the same head)
        jmp     done
sigmask:  # rt_sigprocmask: the thread's mask is in the slot (S_MASKON); answered here
        # unless an argument needs the server's refusal (EINVAL, EFAULT)
        cmpl    $0, %gs:S_MASKON
        je      ask
        cmpq    $8, %r10                # sigsetsize
        jne     ask
        movq    %gs:S_USER_HI, %r11
        subq    $8, %r11                # r11 = the last address 8 bytes fit at
        testq   %rdx, %rdx              # oldset: NULL, or in the user range
        jz      1f
        cmpq    %gs:S_USER_LO, %rdx
        jb      ask
        cmpq    %r11, %rdx
        ja      ask
1:      movq    %gs:S_MASK, %rax        # rax = the new mask: the old one if no set
        testq   %rsi, %rsi
        jz      4f
        cmpq    %gs:S_USER_LO, %rsi
        jb      ask
        cmpq    %r11, %rsi
        ja      ask
        movq    (%rsi), %rcx            # the set
        cmpl    $1, %edi                # how: SIG_BLOCK 0, SIG_UNBLOCK 1, SIG_SETMASK 2
        jb      2f
        je      3f
        cmpl    $2, %edi
        jne     ask                     # EINVAL
        movq    %rcx, %rax
        jmp     5f
2:      orq     %rcx, %rax
        jmp     5f
3:      notq    %rcx
        andq    %rcx, %rax
5:      movq    $~UNBLOCKABLE, %rcx
        andq    %rcx, %rax
4:      testq   %rdx, %rdx
        jz      6f
        movq    %gs:S_MASK, %rcx        # *oldset before the commit: a kick before it puts
        movq    %rcx, (%rdx)            # the call back at its site, made again alike
6:      movq    $0, %gs:S_RES
        movq    %rax, %gs:S_MASK        # the commit: a kick from here on answers the call
mask_made:
        incq    %gs:S_MCALLS
mask_mcounted:
        incq    %gs:S_GCALLS
mask_counted:
        mfence                          # the mask stored before the pending set is read
        notq    %rax                    # (the monitor: pending stored, then mask read)
        testq   %rax, %gs:S_PENDING
        jnz     done_work               # a pending signal unblocked: delivered on return
        jmp     done
mask_end:
futex:  # futex: a wait that would block spins a while registered in the slot (a wake
        # finds it there), then goes to the exit path; a wake finds the spinning waiters
        # itself unless a waiter is blocked in the monitor; the rest goes to the server
        movl    %esi, %r11d
        andl    $FUTEX_CMD_MASK, %r11d  # the command: PRIVATE and CLOCK_REALTIME off
        jz      futex_wait              # FUTEX_WAIT
        cmpl    $FUTEX_WAIT_BITSET, %r11d
        je      futex_wait
        cmpl    $FUTEX_WAKE, %r11d
        je      futex_wake
        cmpl    $FUTEX_WAKE_BITSET, %r11d
        je      futex_wake
        jmp     ask
futex_wait:
        testb   $3, %dil                # misaligned (EINVAL) or outside the user range
        jnz     ask                     # (EFAULT): the server answers, the word is not
        cmpq    %gs:S_USER_LO, %rdi     # read here (a read there could fault)
        jb      ask
        cmpq    %gs:S_USER_HI, %rdi     # aligned below a page-aligned end: 4 bytes fit
        jae     ask
        cmpl    (%rdi), %edx            # rdx = val: a changed word is EAGAIN (or EFAULT:
        jne     ask                     # unmapped pages read 0 here), from the server
        testq   %r10, %r10              # a timeout: no spinning
        jnz     waits
        cmpq    $0, %gs:S_SPIN          # the monitor lets this slot spin (in-guest futex
        je      waits                   # on, not backed off)
        movl    $-1, %eax               # the waiter's bitset: FUTEX_WAIT matches any
        cmpl    $FUTEX_WAIT_BITSET, %r11d
        jne     1f
        movl    %r9d, %eax
        testl   %eax, %eax              # 0: EINVAL, from the server
        jz      ask
1:      movl    %eax, %gs:S_WBITSET
        movq    %gs:S_SLOT0, %rcx       # every other thread waits in the monitor: none
        movl    %gs:S_NSLOTS, %r11d     # can wake this one soon, and whoever wakes
        movl    $1, %edx                # them needs a host core: no spinning
2:      xorl    %eax, %eax              # (S_BLOCKED 1: woken, on its way back)
        cmpq    $1, S_BLOCKED(%rcx)
        seta    %al
        addl    %eax, %edx              # edx = 1 + the others waiting in the monitor
        addq    $SLOT_SIZE, %rcx
        decl    %r11d
        jnz     2b
        cmpl    %gs:S_NBOUND, %edx
        movq    %gs:S_A2, %rdx          # val again (movs keep the flags)
        jae     waits
        movq    %rdi, %gs:S_WADDR
        jmp     spin_wait               # (in the published range: settle reads the state)
waits:
        movl    $WAITS, %gs:S_STATE     # the same value: it would wait (the exit
        jmp     slow                    # path neither counts it skipped nor backs off)
futex_wake:
        cmpl    $0, %gs:S_INGUEST       # the monitor allows in-guest wakes (no observer,
        je      ask                     # no memory shared with other processes)
        testb   $3, %dil
        jnz     ask
        cmpl    $0, %edx                # count <= 0: the server's answer
        jle     ask
        movl    $-1, %eax
        cmpl    $FUTEX_WAKE_BITSET, %r11d
        jne     1f
        movl    %r9d, %eax
        testl   %eax, %eax              # bitset 0: EINVAL
        jz      ask
1:      movl    %eax, %gs:S_WBITSET     # this slot waits on nothing: a scratch field
        movq    $0, %gs:S_RES           # waiters woken
        movl    $0, %gs:S_KICKED
wake_scan:                              # to wake_end: a kick lets it finish (S_KICKED)
        mfence                          # the caller's store to the word before the reads
        movq    %gs:S_SLOT0, %rcx
        movl    %gs:S_NSLOTS, %r11d
1:      testl   %r11d, %r11d            # a waiter blocked in the monitor on this word:
        jz      2f                      # the server wakes (all of them, in order)
        cmpq    %rdi, S_BLOCKED(%rcx)
        je      ask
        addq    $SLOT_SIZE, %rcx
        decl    %r11d
        jmp     1b
2:      movq    %gs:S_SLOT0, %rcx
        movl    %gs:S_NSLOTS, %r11d
3:      testl   %r11d, %r11d
        jz      4f
        cmpl    $SPINWAIT, S_STATE(%rcx)
        jne     5f
        cmpq    %rdi, S_WADDR(%rcx)
        jne     5f
        movl    %gs:S_WBITSET, %eax
        testl   %eax, S_WBITSET(%rcx)
        jz      5f
        movl    $SPINWAIT, %eax
        movl    $WOKEN, %edx
        lock cmpxchgl %edx, S_STATE(%rcx)
        jne     5f                      # it gave up spinning: it reads the word again
        cmpq    %rdi, S_WADDR(%rcx)     # still a wait on this word, not a later one that
        jne     5f                      # took the slot meanwhile (woken: a spurious 0)
        movl    %gs:S_WBITSET, %eax
        testl   %eax, S_WBITSET(%rcx)
        jz      5f
        incq    %gs:S_RES
        movq    %gs:S_RES, %rax
        cmpl    %gs:S_A2, %eax
        jae     4f
5:      addq    $SLOT_SIZE, %rcx
        decl    %r11d
        jmp     3b
4:      incq    %gs:S_GCALLS            # answered here: S_RES holds the result
wake_end:                               # to wake_tail: answered (settle's view)
        cmpl    $0, %gs:S_KICKED
        jne     done_work
        jmp     done
wake_tail:
ask:
        movq    %gs:S_BUDGET, %r11
        testq   %r11, %r11              # 0: the monitor backs this slot off
        jz      slow
        rdtsc
        shlq    $32, %rdx
        orq     %rax, %rdx              # rdx = now
        cmpq    %gs:S_ALIVE, %rdx       # the server's lease ran out: it is asleep or
        jae     slow                    # off its host core; do not wait for it
        addq    %rdx, %r11              # r11 = deadline in TSC ticks
        movl    $REQ, %gs:S_STATE       # publish (TSO: after the argument stores)
published:
spin:   pause
        movl    %gs:S_STATE, %eax
        cmpl    $DONE, %eax
        je      done
        cmpl    $DONE_WORK, %eax
        je      done_work
        cmpl    $REDO, %eax
        je      slow                    # REDO stays for the exit path to count
        cmpl    $TAKEN, %eax
        je      spin                    # the server has it: wait for the answer
        rdtsc
        shlq    $32, %rdx
        orq     %rax, %rdx
        cmpq    %r11, %rdx              # budget spent,
        jae     withdraw
        cmpq    %gs:S_ALIVE, %rdx       # or the server's lease ran out
        jb      spin
withdraw:
        movl    $REQ, %eax
        movl    $WITHDRAWN, %edx
        lock cmpxchgl %edx, %gs:S_STATE
        jne     spin                    # taken meanwhile: wait for the answer
        jmp     slow
spin_wait:                              # a futex wait, registered: only a wake ends it
        movl    $SPINWAIT, %gs:S_STATE
        mfence                          # registered before the word is read again
        cmpl    (%rdi), %edx
        jne     unregister              # changed meanwhile: EAGAIN, from the server
        rdtsc
        shlq    $32, %rdx
        orq     %rax, %rdx
        movq    %gs:S_SPIN, %r11
        testl   $FUTEX_PRIVATE, %esi    # a shared wait (pthread_join's on the tid: its
        jnz     2f                      # wake is the thread's end, in the monitor) spins
        movq    %gs:S_SPIN_SHARED, %r11 # as long as the monitor says for those
2:      addq    %rdx, %r11              # r11 = deadline
1:      pause
        cmpl    $WOKEN, %gs:S_STATE
        je      woken
        rdtsc
        shlq    $32, %rdx
        orq     %rax, %rdx
        cmpq    %r11, %rdx
        jb      1b
        movl    $SPINWAIT, %eax         # no wake in time: the exit path waits
        movl    $SPUN, %edx
        lock cmpxchgl %edx, %gs:S_STATE
        jne     woken                   # woken meanwhile
        jmp     slow
unregister:
        movl    $SPINWAIT, %eax
        movl    $IDLE, %edx
        lock cmpxchgl %edx, %gs:S_STATE
        jne     woken
        jmp     ask
woken:                                  # a wake ended the wait: 0
        incq    %gs:S_GCALLS
woken_counted:
        movq    $0, %gs:S_RES
        jmp     done
slow:                                   # the exit path, registers as at the site
        restore_user_state
        movq    %gs:S_NR, %rax          # movs: the flags stay
        movq    %gs:S_RET, %rcx
        outb    %al, $SYSCALL_PORT      # served as a syscall: RIP = RCX, RFLAGS = R11
        ud2
done_work:                              # answered, and signals or an exit are due
        restore_user_state
        movq    %gs:S_RES, %rax
        movq    %gs:S_RET, %rcx
        movl    $IDLE, %gs:S_STATE
        outb    %al, $WORK_PORT         # RIP = RCX, RFLAGS = R11, then the work
        ud2
done:
        restore_user_state
        movq    %gs:S_RES, %rax
        movq    %gs:S_RET, %rcx
        movl    $IDLE, %gs:S_STATE      # after the loads (TSO keeps the order)
        jmpq    *%rcx
end:
