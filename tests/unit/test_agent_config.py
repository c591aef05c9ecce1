import pytest

from agent.config import ConfigError, parse_config


def test_defaults_and_hostname():
    c = parse_config(["--insecure", "--insecure"])
    assert c.host_id and c.listen == "127.0.0.1:8775" and c.etcd == ("127.0.0.1:2379",)
    assert (c.state_dir, c.stats_interval, c.lease_ttl) == ("/var/lib/computed", 1.0, 10)


def test_flags_win_over_the_config_file():
    ini = "[agent]\nstats_interval = 5\nhost-id = from-file\navailability_zone = az1\n"
    argv = ["--insecure", "--config", "x.ini", "--host-id", "h1"]
    c = parse_config(argv, read_file=lambda p: ini)
    assert (c.host_id, c.stats_interval, c.availability_zone) == ("h1", 5.0, "az1")


def test_etcd_endpoints_list():
    assert parse_config(["--insecure", "--etcd", "a:1, b:2"]).etcd == ("a:1", "b:2")


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--state-dir", "/" + "x" * 80], "too long"),
        (["--lease-ttl", "1"], "--lease-ttl"),
        (["--etcd", "nohost"], "--etcd"),
        (["--listen", "nowhere"], "--listen"),
        (["--vcpus", "0"], "--vcpus"),
        (["--host-id", "a/b"], "--host-id"),
    ],
)
def test_bad_settings_are_named(argv, words):
    with pytest.raises(ConfigError, match=words):
        parse_config(["--insecure", *argv])


def test_bad_config_file_settings():
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_config(["--insecure", "--config", "f"], read_file=lambda p: "[agent]\ncolour = red\n")
    with pytest.raises(ConfigError, match="not a number"):
        parse_config(
            ["--insecure", "--config", "f"], read_file=lambda p: "[agent]\nlease_ttl = soon\n"
        )


def test_tls_is_required_unless_insecure():
    with pytest.raises(ConfigError, match="--tls-cacert, --tls-cert, --tls-key"):
        parse_config(["--host-id", "h"])
    with pytest.raises(ConfigError, match="contradict"):
        parse_config(["--insecure", "--tls-cert", "c.pem"])
    with pytest.raises(ConfigError, match="go together"):
        parse_config(["--insecure", "--etcd-cert", "c.pem"])


def test_tls_files_from_flags_and_config_file():
    ini = "[agent]\ntls_cacert = /p/ca.pem\ntls_cert = /p/cert.pem\ntls_key = /p/key.pem\n"
    c = parse_config(["--config", "f", "--etcd-cacert", "e/ca", "--etcd-cert", "e/c",
                      "--etcd-key", "e/k"], read_file=lambda p: ini)  # fmt: skip
    assert (c.tls.ca, c.tls.cert, c.tls.key) == ("/p/ca.pem", "/p/cert.pem", "/p/key.pem")
    assert (c.etcd_tls.ca, c.etcd_tls.cert, c.etcd_tls.key) == ("e/ca", "e/c", "e/k")
    assert parse_config(["--insecure"]).tls is None


def test_ksm_is_on_unless_the_flag_or_the_config_file_turns_it_off():
    assert parse_config(["--insecure"]).ksm is True
    assert parse_config(["--insecure", "--no-ksm"]).ksm is False
    off = "[agent]\nksm = false\n"
    assert parse_config(["--insecure", "--config", "f"], read_file=lambda p: off).ksm is False
    on_again = ["--insecure", "--config", "f", "--ksm"]
    assert parse_config(on_again, read_file=lambda p: off).ksm is True
