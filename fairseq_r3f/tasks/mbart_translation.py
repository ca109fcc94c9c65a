"""fairseq's ``translation_from_pretrained_bart`` (mBART fine-tuning) in a form fairseq 0.12 can run.

The stock task reads ``self.args`` (data path, languages, padding) in load_dataset, build_generator and
build_dataset_for_inference, but its parent ``TranslationTask`` became a dataclass task that sets only
``self.cfg``, so training stops with "'TranslationFromPretrainedBARTTask' object has no attribute 'args'"
(fairseq issues #3169 and #4479; the fix, pull request #4487, is not merged). This task is the stock one with
``self.args`` set: the same options, dictionaries (the language tags and <mask> appended), data and decoding.
"""

from fairseq.tasks import register_task
from fairseq.tasks.translation_from_pretrained_bart import TranslationFromPretrainedBARTTask


@register_task("translation_from_pretrained_mbart")
class TranslationFromPretrainedMBARTTask(TranslationFromPretrainedBARTTask):
    def __init__(self, args, src_dict, tgt_dict):
        super().__init__(args, src_dict, tgt_dict)
        self.args = args
