;; Your channels for `guix time-machine -C channels.scm`. To build on exactly
;; the image's Guix, start from what it prints:
;;   docker run --rm $caps IMAGE guix describe -f channels > channels.scm
;; and add your own channel after it:
;;   (channel (name 'mine) (url "https://example.org/mine.git") (branch "main"))
(list (channel
        (name 'guix)
        (url "https://codeberg.org/guix/guix.git")
        (branch "master")))
