"""The TIDS/DAC reference system (issue 17): a MIL-STD-1553B bus model and an IP traffic
generator with seeded attacks, Chapter 10 / CSV / pcap recordings, a trained statistical
intrusion detector (TIDS), a dynamic access-control filter (DAC) and the partition
programs that run them under `karn system up` (examples/ids/system.toml, docs/ids.md).

Everything the partitions import needs only Python's standard library (and dpkt for pcap),
so the package runs unchanged in a karn image of Debian's python3.
"""
