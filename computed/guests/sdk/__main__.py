"""`python -m computed.guests.sdk hello.c -o hello.elf`: the same as computed-guest-cc."""

from computed.guests.sdk.cc import main

main()
