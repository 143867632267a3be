/* The library of tests/programs/collect_probe.c. */
int probe_lib(void) { return 0; }
