/* placeholder */ typedef int marble_placeholder_demo_;
