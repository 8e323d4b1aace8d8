from channels.html import html_to_text, sanitize_html


def test_scripts_event_handlers_and_javascript_links_are_removed():
    cleaned = sanitize_html('<p onclick="steal()">Hi<script>alert(1)</script><a href="javascript:evil()">x</a></p>')
    assert "script" not in cleaned
    assert "onclick" not in cleaned
    assert "javascript" not in cleaned
    assert cleaned.startswith("<p>Hi")


def test_inline_images_by_content_id_and_plain_links_survive():
    cleaned = sanitize_html('<img src="cid:logo@x"><a href="https://example.org/a">a</a>')
    assert 'src="cid:logo@x"' in cleaned
    assert 'href="https://example.org/a"' in cleaned
    assert 'rel="noopener noreferrer nofollow"' in cleaned


def test_data_urls_and_styles_are_removed():
    cleaned = sanitize_html('<img src="data:image/png;base64,AAAA"><style>body{}</style><iframe src="x"></iframe>ok')
    assert "data:" not in cleaned
    assert "style" not in cleaned and "iframe" not in cleaned
    assert cleaned.endswith("ok")


def test_html_becomes_readable_text_with_line_breaks():
    text = html_to_text("<div>Hello <b>there</b></div><p>Line&nbsp;2 &amp; more</p><script>x()</script><ul><li>a</li><li>b</li></ul>")
    assert text.splitlines() == ["Hello there", "Line 2 & more", "a", "b"]
