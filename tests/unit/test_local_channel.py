import email
import email.policy
import json

from channels.local import LocalLogChannel
from channels.messages import ChannelName, DeliveryStatus, OutboundMessage


def test_email_is_written_as_an_eml_file_with_threading_headers(tmp_path):
    channel = LocalLogChannel(ChannelName.EMAIL, tmp_path, "support@example.com")
    result = channel.send(OutboundMessage(
        channel=ChannelName.EMAIL, recipient="maria@example.org", text="Fixed it.", subject="Re: VAT [#1001]",
        external_id="<helpdesk.abc@example.com>", reply_to_external_ids=("<newest@x>", "<oldest@x>"),
    ))
    assert result.status is DeliveryStatus.SENT
    [path] = tmp_path.glob("*.eml")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert mail["Message-ID"] == "<helpdesk.abc@example.com>"
    assert mail["In-Reply-To"] == "<newest@x>"
    assert mail["References"] == "<oldest@x> <newest@x>"
    assert mail["To"] == "maria@example.org"
    assert mail.get_content().strip() == "Fixed it."


def test_texts_are_appended_to_a_log_as_json_lines(tmp_path):
    channel = LocalLogChannel(ChannelName.SMS, tmp_path)
    channel.send(OutboundMessage(channel=ChannelName.SMS, recipient="+46701234567", text="Hej 👋"))
    channel.send(OutboundMessage(channel=ChannelName.SMS, recipient="+46701234567", text="Again"))
    lines = (tmp_path / "sms.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["Hej 👋", "Again"]
