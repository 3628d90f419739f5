"""Task data: what a data directory holds (`harness data ls`), copies of the hub's splits
(`harness data fetch`) and fresh CBT items built from public-domain books (`harness data build-cbt`)."""
