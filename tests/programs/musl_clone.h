/* musl_clone(stack_top, nr): musl 1.2's __clone body from `mov %rdi,%r11` to its
   `syscall`, byte for byte (the fast-syscall patcher knows it: KNOWN_HEADS), the number set
   as __clone sets 56 (`xor %eax,%eax; mov $nr,%al`): stores 0x1234 (rcx) at the
   16-aligned stack_top - 8, then makes call nr and returns its result. Its head, `sub
   $8,%rsi; mov %rcx,(%rsi)`, is patched as one jmp rel32 over two instructions. */
#ifndef MUSL_CLONE_H
#define MUSL_CLONE_H

long musl_clone(char *stack_top, long nr);
__asm__(".text\n.p2align 6\nmusl_clone:\n"
        "\tmov %esi,%edx\n\tmov %rdi,%rsi\n\tsub $16,%rsp\n\tmov $0x1234,%ecx\n"
        "\txor %eax,%eax\n\tmov %dl,%al\n"
        "\t.byte 0x49,0x89,0xfb, 0x48,0x89,0xd7, 0x4c,0x89,0xc2, 0x4d,0x89,0xc8\n"
        "\t.byte 0x4c,0x8b,0x54,0x24,0x08, 0x4d,0x89,0xd9, 0x48,0x83,0xe6,0xf0\n"
        "\t.byte 0x48,0x83,0xee,0x08, 0x48,0x89,0x0e\n"
        "\tsyscall\n\tadd $16,%rsp\n\tret\n");

#endif
