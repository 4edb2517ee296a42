"""Command-line errors of `fedcdr-client` exit with code 2 and a message."""

import logging

from client.main import EXIT_USAGE, main
from common.certs import create_certificates


def test_run_checks_tls_key_before_loading_data(tmp_path, caplog):
    certs = create_certificates(tmp_path / "certs", ["a", "b"])
    config = tmp_path / "client.toml"
    config.write_text(
        'domain = "a"\ndata_dir = "missing"\n[tls]\n'
        f'ca = "{certs.domain_dirs["a"]}/ca.pem"\n'
        f'cert = "{certs.domain_dirs["a"]}/cert.pem"\n'
        f'key = "{certs.domain_dirs["b"]}/key.pem"\n'
    )

    with caplog.at_level(logging.ERROR):
        code = main(["run", "--config", str(config)])

    assert code == EXIT_USAGE
    assert "does not belong to tls.cert" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_validate_rejects_file_path(tmp_path, caplog):
    path = tmp_path / "books.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n")

    with caplog.at_level(logging.ERROR):
        code = main(["validate", str(path)])

    assert code == EXIT_USAGE
    assert "is a file, not a folder" in caplog.text
