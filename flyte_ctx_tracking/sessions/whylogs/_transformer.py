"""``DatasetProfileView`` as a Flyte type: task inputs and outputs that are whylogs profiles.

Importing this module registers :class:`WhylogsDatasetProfileTransformer` with flytekit's
``TypeEngine`` (unless another transformer already handles ``DatasetProfileView``). The package's
``flytekit.plugins`` entry point does it for you as soon as whylogs is imported in a flytekit process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ._compat import import_whylogs

import_whylogs()  # the numpy-2 step runs before whylogs is imported

from flytekit.core.context_manager import FlyteContext  # noqa: E402
from flytekit.core.type_engine import AsyncTypeTransformer, TypeEngine, TypeTransformerFailedError  # noqa: E402
from flytekit.models.core.types import BlobType  # noqa: E402
from flytekit.models.literals import Blob, BlobMetadata, Literal, Scalar  # noqa: E402
from flytekit.models.types import LiteralType  # noqa: E402
from whylogs.core import DatasetProfileView  # noqa: E402

__all__ = ["WhylogsDatasetProfileTransformer", "register"]

logger = logging.getLogger(__name__)


class WhylogsDatasetProfileTransformer(AsyncTypeTransformer[DatasetProfileView]):  # type: ignore[misc]
    """flytekit ``TypeTransformer`` for whylogs ``DatasetProfileView``: one binary Blob.

    The Blob holds whylogs' own binary format (``DatasetProfileView.serialize()``, the bytes
    ``view.write(path)`` writes), with the same literal type as flytekitplugins-whylogs
    (``BlobType(format="binary", dimensionality=SINGLE)``): workflows and profiles written with that
    plugin keep working.
    """

    BLOB_TYPE = BlobType(format="binary", dimensionality=BlobType.BlobDimensionality.SINGLE)

    def __init__(self) -> None:
        super().__init__("whylogs-profile-transformer", t=DatasetProfileView)

    def get_literal_type(self, t: type[DatasetProfileView]) -> LiteralType:
        """A single binary Blob."""
        return LiteralType(blob=self.BLOB_TYPE)

    async def async_to_literal(
        self,
        ctx: FlyteContext,
        python_val: DatasetProfileView,
        python_type: type[DatasetProfileView],
        expected: LiteralType,
    ) -> Literal:
        """Serialize the profile to a local file and upload it to the raw output location."""
        if not isinstance(python_val, DatasetProfileView):
            raise TypeTransformerFailedError(
                f"expected a whylogs DatasetProfileView (for example profile.view()), got {type(python_val).__name__}"
            )
        local_path = Path(ctx.file_access.get_random_local_path())
        local_path.parent.mkdir(parents=True, exist_ok=True)
        local_path.write_bytes(python_val.serialize())
        remote_path = await ctx.file_access.async_put_raw_data(str(local_path))
        return Literal(scalar=Scalar(blob=Blob(uri=remote_path, metadata=BlobMetadata(type=self.BLOB_TYPE))))

    async def async_to_python_value(
        self, ctx: FlyteContext, lv: Literal, expected_python_type: type[DatasetProfileView]
    ) -> DatasetProfileView:
        """Download the Blob and read the profile back."""
        try:
            uri = lv.scalar.blob.uri
        except AttributeError as error:
            raise TypeTransformerFailedError(f"cannot read a whylogs profile from {lv}: it is not a Blob") from error
        local_path = ctx.file_access.get_random_local_path()
        await ctx.file_access.async_get_data(uri, local_path, is_multipart=False)
        return DatasetProfileView.deserialize(Path(local_path).read_bytes())

    def to_html(
        self, ctx: FlyteContext, python_val: DatasetProfileView, expected_python_type: type[DatasetProfileView]
    ) -> str:
        """The profile as HTML: a self-contained column table, then whylogs' profile summary report."""
        from ...decks.whylogs import profile_summary_html
        from ._analysis import column_summaries, interactive_summary_html

        return profile_summary_html(
            "profile", column_summaries(python_val), interactive_html=interactive_summary_html(python_val)
        )


def register() -> bool:
    """Register the transformer with flytekit's TypeEngine; False when ``DatasetProfileView`` already has one."""
    try:
        TypeEngine.register(WhylogsDatasetProfileTransformer())
    except ValueError as error:  # another transformer (flytekitplugins-whylogs, or ours already) handles it
        logger.debug("not registering the whylogs transformer: %s", error)
        return False
    return True


register()
