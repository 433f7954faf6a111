"""Settings: parsing, sources and precedence (command line > SERVER_* environment > defaults)."""
import pytest

from server.config import ConfigError, Settings, parse_settings, parse_size


def test_defaults_are_protective():
    s = parse_settings([], environ={})
    assert s == Settings()
    assert s.idle_timeout == 75 and s.body_timeout > 0 and s.backlog >= 1024
    assert s.max_header_size == 64 * 1024 and s.max_body_size == 1024 * 1024
    assert s.tcp_port is None and s.files is None and s.outbound_allow == ()


def test_environment_then_command_line():
    env = {"SERVER_PORT": "9000", "SERVER_DEBUG": "yes", "SERVER_OUTBOUND_ALLOW": "127.0.0.1, Example.org"}
    s = parse_settings([], environ=env)
    assert s.port == 9000 and s.debug is True
    assert s.outbound_allow == ("127.0.0.1", "example.org")
    s = parse_settings(["--port", "9001", "--no-debug"], environ=env)
    assert s.port == 9001 and s.debug is False


@pytest.mark.parametrize("text, value",
                         [("65536", 65536), ("64K", 65536), ("1MiB", 1 << 20), ("2g", 2 << 30)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_tcp_port_can_be_switched_off_again(tmp_path):
    assert parse_settings(["--tcp-port", "7000"], environ={}).tcp_port == 7000
    assert parse_settings(["--tcp-port", "off"], environ={"SERVER_TCP_PORT": "7000"}).tcp_port is None
    assert parse_settings(["--files", str(tmp_path)], environ={}).files == tmp_path.resolve()


def test_errors_name_their_source():
    with pytest.raises(ConfigError, match="^SERVER_BACKLOG: must be at least 1"):
        parse_settings([], environ={"SERVER_BACKLOG": "0"})
    with pytest.raises(ConfigError, match="^--log-level: must be one of"):
        parse_settings(["--log-level", "loud"], environ={})


def test_garbage_collector_thresholds_default_and_can_be_reset():
    assert parse_settings([]).gc_threshold == (5000, 10, 10)
    assert parse_settings(["--gc-threshold", ""]).gc_threshold is None  # Python's own
    assert parse_settings(["--gc-threshold", "10000,20,20"]).gc_threshold == (10000, 20, 20)
    with pytest.raises(ConfigError, match="--gc-threshold"):
        parse_settings(["--gc-threshold", "5000,10"])
