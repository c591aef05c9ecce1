"""`python -m computed.devcluster` (deploy/devcluster): up, status, down."""

from computed.devcluster.main import main

main()
