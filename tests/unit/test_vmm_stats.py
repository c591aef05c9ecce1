from agent.vmm_stats import cpu_percent


def test_cpu_percent_needs_an_interval():
    assert cpu_percent(None, None, 1.0, 10.0) is None
    assert cpu_percent(1.0, 10.0, 2.0, 10.0) is None  # no time passed


def test_cpu_percent_is_per_host_cpu():
    assert cpu_percent(1.0, 10.0, 1.5, 11.0) == 50.0
    assert cpu_percent(1.0, 10.0, 3.0, 11.0) == 200.0  # two busy vCPUs
    assert cpu_percent(2.0, 10.0, 1.0, 11.0) == 0.0  # a restarted process never goes negative
