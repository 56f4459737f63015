"""Bodies over the limits are answered 413 before anything reads them; anonymous ones far earlier."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from autocomplete.models import IngestJob
from autocomplete.request_limits import MULTIPART_OVERHEAD_BYTES

pytestmark = pytest.mark.django_db

UPLOAD_URL = "/admin/autocomplete/corpus/upload/"


def post_bytes(client: Client, path: str, size: int, *, declared: int | None = None):
    """POST `size` bytes, optionally declaring another Content-Length (none of the rest is sent)."""
    if declared is None:
        return client.post(path, data=b"x" * size, content_type="application/octet-stream")
    return client.post(path, data=b"x" * size, content_type="application/octet-stream", CONTENT_LENGTH=str(declared))


def test_an_anonymous_body_over_the_small_limit_is_refused(client: Client, configure: Callable[..., None]) -> None:
    configure(MAX_ANONYMOUS_BODY_BYTES=1000)
    response = post_bytes(client, "/admin/login/", 1001)
    assert response.status_code == 413
    assert "AUTOCOMPLETE_MAX_ANONYMOUS_BODY_BYTES" in response.json()["error"]
    assert post_bytes(client, "/admin/login/", 1000).status_code == 200  # reaches the login page


def test_a_declared_gigabyte_is_refused_unread(client: Client, admin_client: Client) -> None:
    # The test client's payload raises when read past what was sent: a 413 proves nothing read it.
    for each in (client, admin_client):
        response = post_bytes(each, UPLOAD_URL, 10, declared=2**30)
        assert response.status_code == 413 and response["Content-Type"] == "application/json"


def test_a_signed_in_upload_over_the_upload_limit_is_refused(
    admin_client: Client, configure: Callable[..., None]
) -> None:
    configure(MAX_UPLOAD_BYTES=2000)
    response = post_bytes(admin_client, UPLOAD_URL, 2000 + MULTIPART_OVERHEAD_BYTES + 1)
    assert response.status_code == 413
    assert "uploads are limited to 2,000 (AUTOCOMPLETE_MAX_UPLOAD_BYTES)" in response.json()["error"]
    # Just over the file limit, the body still fits: the form explains the limit as before.
    form = {"new_corpus_name": "Help", "new_corpus_slug": "help", "encoders": ["minilm"], "mode": "merge"}
    response = admin_client.post(UPLOAD_URL, {**form, "file": SimpleUploadedFile("faq.csv", b"q,a\n" * 600)})
    assert response.status_code == 200
    assert "the limit is 2,000 (AUTOCOMPLETE_MAX_UPLOAD_BYTES)" in response.content.decode()
    assert not IngestJob.objects.exists()


def test_an_upload_needs_a_session_to_pass_the_anonymous_limit(
    client: Client, admin_client: Client, configure: Callable[..., None]
) -> None:
    configure(MAX_ANONYMOUS_BODY_BYTES=1000, MAX_UPLOAD_BYTES=100_000)
    assert post_bytes(client, UPLOAD_URL, 5000).status_code == 413
    assert post_bytes(admin_client, UPLOAD_URL, 5000).status_code == 200  # the form, with its errors


@pytest.mark.parametrize("declared", ["", "not a number", "-5"])
def test_requests_declaring_no_usable_length_pass(client: Client, declared: str) -> None:
    response = client.get("/admin/login/", CONTENT_LENGTH=declared)
    assert response.status_code == 200
