/* The bundled example: `make example` builds this with gcc and runs it with `karn run`. */
#include <stdio.h>
#include <sys/utsname.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct utsname u;
    uname(&u);
    printf("Hello from %s, running on %s %s as a KVM unikernel (pid %d).\n",
           argc > 1 ? argv[1] : "hello", u.sysname, u.machine, (int)getpid());
    return 0;
}
