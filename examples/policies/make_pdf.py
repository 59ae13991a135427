"""Writes finance/expense-approval-limits.pdf: a tiny text PDF, no PDF library needed.

Run: python examples/policies/make_pdf.py
"""

from __future__ import annotations

from pathlib import Path

TITLE = "Expense Approval Limits"
LINES = [
    "Expense Approval Limits",
    "",
    "Line managers approve expense claims up to 2,000 euros per claim.",
    "Claims between 2,000 and 10,000 euros need approval from a department head.",
    "Claims above 10,000 euros need approval from the CFO.",
    "Approvers may not approve their own expenses or those of their manager.",
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build_pdf(title: str, lines: list[str]) -> bytes:
    stream = "BT /F1 12 Tf 72 740 Td 16 TL\n" + "".join(f"({_escape(line)}) Tj T*\n" for line in lines) + "ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({_escape(title)}) >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


if __name__ == "__main__":
    target = Path(__file__).parent / "finance" / "expense-approval-limits.pdf"
    target.write_bytes(build_pdf(TITLE, LINES))
    print(f"wrote {target}")
