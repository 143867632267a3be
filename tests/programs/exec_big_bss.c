/* A program with 128 MiB of zero-initialised data: it runs natively; under a smaller
 * --memory it cannot be loaded (tests/test_exec.py: a failure past execve's point of no
 * return). */
char big[128 << 20];

int main(int argc, char **argv)
{
    (void)argv;
    big[argc << 20] = 42;
    return big[argc << 20];
}
